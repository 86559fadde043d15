"""Run the harness against another timm release without touching the user's environment.

timm is pure Python and its dependencies (torch, torchvision, huggingface_hub, safetensors, pyyaml) are
already installed with the harness, so a release is installed with ``pip --no-deps --target`` into a cached
folder per version, and the harness re-runs itself with that folder first on ``PYTHONPATH``. A local wheel
or source tree (``--timm ./dist/timm-1.0.32.dev0-py3-none-any.whl``, ``--timm .`` in a timm checkout) is
installed the same way into a folder named by a hash of its content, so a changed tree is never mistaken for
the one before (``git bisect run`` over timm commits relies on that).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

REEXEC_ENV = 'HARNESS_TIMM_VERSION'   # set in the child: the release it must have imported


class TimmInstallError(RuntimeError):
    pass


def installed_timm(spec: str, cache_dir: Path) -> tuple[Path, str]:
    """The folder holding timm ``spec`` (a release, a wheel file or a source tree) and the ``__version__`` it
    must import as, installing it on first use."""
    path = Path(spec)
    if not path.exists():
        return installed_release(spec, cache_dir), spec
    if path.is_file() and path.suffix == '.whl':
        version = path.name.split('-')[1]
        return _installed(f'local-{_digest([path])}', [str(path.resolve())], cache_dir), version
    package = path / 'timm'
    if path.is_dir() and (package / '__init__.py').is_file():
        files = sorted(f for f in package.rglob('*') if f.is_file() and '__pycache__' not in f.parts)
        target = cache_dir / 'timm' / f'local-{_digest(files, root=path)}'
        if not (target / 'timm' / '__init__.py').exists():
            staging = target.with_name(f'.{target.name}.partial-{os.getpid()}')
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(package, staging / 'timm', ignore=shutil.ignore_patterns('__pycache__'))
            _publish(staging, target)
        return target, _source_version(package)
    raise TimmInstallError(f'{spec} is neither a timm wheel (.whl) nor a timm source tree (a folder holding '
                           f'timm/__init__.py)')


def _digest(files: list[Path], root: Path | None = None) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root) if root else file.name).encode() + b'\0' + file.read_bytes())
    return digest.hexdigest()[:16]


def _source_version(package: Path) -> str:
    found = re.search(r"""__version__\s*=\s*['"]([^'"]+)['"]""", (package / 'version.py').read_text()) \
        if (package / 'version.py').exists() else None
    if not found:
        raise TimmInstallError(f'{package}: no __version__ in version.py; expected a timm source tree')
    return found.group(1)


def installed_release(version: str, cache_dir: Path) -> Path:
    """The folder holding timm ``version``, installing it from PyPI on first use."""
    return _installed(version, [f'timm=={version}'], cache_dir)


def _installed(name: str, requirement: list[str], cache_dir: Path) -> Path:
    """``cache_dir/timm/<name>``, made by ``pip install --no-deps --target`` of ``requirement`` on first use."""
    target = cache_dir / 'timm' / name
    if (target / 'timm' / '__init__.py').exists():
        return target
    staging = target.with_name(f'.{name}.partial-{os.getpid()}')
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--disable-pip-version-check',
               '--target', str(staging), *requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TimmInstallError(f'could not install {" ".join(requirement)}:\n{done.stderr.strip()[-2000:]}')
    _publish(staging, target)
    return target


def _publish(staging: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging.rename(target)
    except OSError:   # another run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)


def rerun_with(version: str, site_dir: Path, argv: list[str]) -> int:
    """Run ``harness <argv>`` in a child process that imports timm from ``site_dir``; its exit code (128 + N if
    signal N ended it, as a shell says). A SIGTERM sent to this process alone (``docker stop``, ``kill PID``)
    is passed on: the child ends its run as on its own SIGTERM, with a report."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(site_dir), env.get('PYTHONPATH')]))
    env[REEXEC_ENV] = version
    child = subprocess.Popen([sys.executable, '-m', 'harness.cli', *argv], env=env)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 128 - code if code < 0 else code


def check_imported_release() -> str | None:
    """In a re-run child: a problem if the imported timm is not the release asked for, else None."""
    wanted = os.environ.get(REEXEC_ENV)
    if not wanted:
        return None
    import timm
    if timm.__version__ != wanted:
        return f'asked for timm {wanted} but imported {timm.__version__} from {timm.__file__}'
    return None
