"""Shared fixtures: a checkpoint cache for the whole session, a way to run cases of a YAML matrix, and runs that
several tests read, made once per session."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

# One compute thread per test process and per harness process a test starts (set before torch is imported, and
# inherited): xdist runs a test per core, and a process's second thread would only spin in OpenMP's busy wait
# while the other processes hold the cores (cases cost several times the CPU they need: swin cases of the smoke
# matrix 40 CPU-s with two threads, 5 with one, on a loaded 2-core machine). Set it to measure otherwise.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import timm  # noqa: E402
import torch  # noqa: E402

from harness.case.runner import run_case
from harness.case.work import CheckpointWork, RunOptions
from harness.spec.cases import expand
from harness.spec.matrix import load_matrix
from harness.timing.config import TimingConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def known_models() -> list[str]:
    return timm.list_models()


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory) -> Path:
    """Synthesized checkpoints are reused across tests, as they are across runs."""
    return tmp_path_factory.mktemp('cache')


@pytest.fixture(scope='session')
def release_cache() -> Path:
    """The cache that tests running other timm releases share (0.9.16, 1.0.3, 1.0.11, 1.0.30 and the current
    one): the user's default, so each release is installed once per machine, not once per test session."""
    return Path(os.environ.get('HARNESS_TEST_CACHE') or Path.home() / '.cache' / 'timm-harness')


@pytest.fixture
def write_matrix(tmp_path):
    def write(text: str, name: str = 'matrix.yaml') -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def run_matrix(write_matrix, cache_dir, known_models, tmp_path):
    """Run every case of a matrix in-process (fresh context: nothing memoised from another test)."""
    def run(text: str, timing: bool = False) -> dict:
        matrix = load_matrix(write_matrix(text), known_models)
        options = RunOptions(torch.device('cpu'), cache_dir, tmp_path / 'run',
                             TimingConfig(enabled=timing, batch_size=2, warmup=0, budget_s=0.0, min_repeats=2))
        work = CheckpointWork(matrix, options)
        return {case.case_id: run_case(case, work) for case in expand(matrix)}
    return run


@pytest.fixture(scope='session')
def once(tmp_path_factory) -> Callable[[str, Callable[[Path], None]], Path]:
    """``once(name, make)``: a folder that ``make(folder)`` filled, made once per test session even under xdist,
    for expensive runs that several tests only read: the first worker to ask makes it, the others wait for it
    (a file lock in the session's temporary folder, which every worker of the session shares)."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base

    def made(name: str, make: Callable[[Path], None]) -> Path:
        folder = shared / f'once-{name}'
        with open(shared / f'once-{name}.lock', 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / '.made').exists():
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir()
                make(folder)
                (folder / '.made').touch()
        return folder
    return made


TINY_AB = '''
name: tiny-ab
models: [{name: vit_tiny_patch16_224, depth: 2, img_size: [128, 256]}]
origins: [timm]
sizes: [[64, 512]]
timing: {warmup: 0, budget_s: 0.3, min_repeats: 4}
'''
NIGHTLY_MAIN = '1.0.30'   # resamples TINY_AB's rectangular source wrongly at create time; the current release does not


@dataclass
class NightlyJob:
    done: subprocess.CompletedProcess
    out: Path   # HARNESS_OUT: the matrix's folder is out / 'main' / 'matrix', its harness ab run's that / 'shard-1'


@pytest.fixture(scope='session')
def nightly_job(once, release_cache) -> NightlyJob:
    """`scripts/nightly.sh local` on TINY_AB, with timm 1.0.30's source standing in for a main branch that broke
    what the current (newest) release does right: what CI's shard and merge jobs do, on one machine, on a night
    that is no release's day. Its `harness ab` run is what tests/test_ab.py checks, its merge, compare and
    findings what tests/test_workflow.py checks: one job for both."""
    from harness.timm_versions import installed_release

    def run(folder: Path) -> None:
        (folder / 'matrix.yaml').write_text(textwrap.dedent(TINY_AB))
        main = installed_release(NIGHTLY_MAIN, release_cache)   # a folder holding timm/: a source tree to --timm
        done = subprocess.run(['bash', str(REPO / 'scripts' / 'nightly.sh'), 'local', str(folder / 'matrix.yaml')],
                              capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, 'HARNESS_BASE': NIGHTLY_MAIN, 'HARNESS_NEW': timm.__version__,
                                   'HARNESS_TIMM_MAIN': str(main), 'HARNESS_RELEASE_DAY': 'false',
                                   'HARNESS_OUT': str(folder / 'out'), 'HARNESS_STATE': str(folder / 'state'),
                                   'HARNESS_CACHE': str(release_cache), 'GITHUB_STEP_SUMMARY': ''})
        (folder / 'done.json').write_text(json.dumps([done.args, done.returncode, done.stdout, done.stderr]))

    folder = once('nightly-job', run)
    return NightlyJob(subprocess.CompletedProcess(*json.loads((folder / 'done.json').read_text())), folder / 'out')
