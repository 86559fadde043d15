"""What the benchmark scripts share: running a command as a fresh process and timing it, running the
harness as a user would, synthesizing a matrix's checkpoints before anything is measured, and saying which
machine and releases the figures come from."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

from harness.cache import default_cache_dir
from harness.checkpoints.store import Checkpoint, checkpoint_for
from harness.spec.cases import expand
from harness.spec.matrix import Matrix

REPO = Path(__file__).resolve().parents[1]
HARNESS = [sys.executable, '-m', 'harness.cli']   # `harness`, without the shell shim in front of it
EXIT_CASES_FAILED = 1                             # harness run: findings, not a broken run


def wall_s(command: list[str], allowed_codes: tuple[int, ...] = (0,)) -> float:
    """Seconds ``command`` took as a fresh process (interpreter start and imports included)."""
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in allowed_codes:
        sys.exit(f'{" ".join(map(str, command))}\nexited {done.returncode}:\n{done.stderr[-3000:]}')
    return elapsed


def harness_run_s(matrix: Path, out: Path, cache: Path, device: str, *options: str) -> float:
    """Wall time of ``harness run``; cases that fail still count, their work was done."""
    command = [*HARNESS, 'run', str(matrix), '--out', str(out), '--cache', str(cache), '--device', device, *options]
    return wall_s(command, allowed_codes=(0, EXIT_CASES_FAILED))


def warm_cache(matrix: Matrix, cache: Path) -> list[Checkpoint]:
    """Synthesize (or find) every checkpoint the matrix's cases load, so no measurement pays for it."""
    wanted = {(case.model, case.origin): None for case in expand(matrix)}
    return [checkpoint_for(model, origin, matrix.seed, cache) for model, origin in wanted]


def matrix_parser(doc: str, matrix: Path, workers: str) -> argparse.ArgumentParser:
    """The options the matrix benchmarks share: MATRIX (default ``matrix``), -n, --device, --cache."""
    parser = argparse.ArgumentParser(description=doc.split('\n\n')[0])
    parser.add_argument('matrix', nargs='?', type=Path, default=matrix)
    parser.add_argument('-n', default=workers, help='harness workers')
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--cache', help="checkpoint cache (default: the harness's)")
    return parser


def default_device() -> str:
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def environment(device: str) -> str:
    name = torch.cuda.get_device_name() if device == 'cuda' else f'{os.cpu_count()} CPUs'
    return (f'device {device} ({name}), {torch.get_num_threads()} torch threads per process, '
            f'timm {timm.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}')


def cache_dir(option: str | None) -> Path:
    """The harness's own cache unless told otherwise, so checkpoints synthesized once serve every run."""
    return Path(option) if option else default_cache_dir()
