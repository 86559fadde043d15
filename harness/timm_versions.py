"""Run the harness against another timm release without touching the user's environment.

timm is pure Python and its dependencies (torch, torchvision, huggingface_hub, safetensors, pyyaml) are
already installed with the harness, so a release is installed with ``pip --no-deps --target`` into a cached
folder per version, and the harness re-runs itself with that folder first on ``PYTHONPATH``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REEXEC_ENV = 'HARNESS_TIMM_VERSION'   # set in the child: the release it must have imported


class TimmInstallError(RuntimeError):
    pass


def installed_release(version: str, cache_dir: Path) -> Path:
    """The folder holding timm ``version``, installing it from PyPI on first use."""
    target = cache_dir / 'timm' / version
    if (target / 'timm' / '__init__.py').exists():
        return target
    staging = target.with_name(f'.{version}.partial-{os.getpid()}')
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--disable-pip-version-check',
               '--target', str(staging), f'timm=={version}']
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TimmInstallError(f'could not install timm=={version} from PyPI:\n{done.stderr.strip()[-2000:]}')
    try:
        staging.rename(target)
    except OSError:   # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def rerun_with(version: str, site_dir: Path, argv: list[str]) -> int:
    """Run ``harness <argv>`` in a child process that imports timm from ``site_dir``."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(site_dir), env.get('PYTHONPATH')]))
    env[REEXEC_ENV] = version
    return subprocess.run([sys.executable, '-m', 'harness.cli', *argv], env=env).returncode


def check_imported_release() -> str | None:
    """In a re-run child: a problem if the imported timm is not the release asked for, else None."""
    wanted = os.environ.get(REEXEC_ENV)
    if not wanted:
        return None
    import timm
    if timm.__version__ != wanted:
        return f'asked for timm {wanted} but imported {timm.__version__} from {timm.__file__}'
    return None
