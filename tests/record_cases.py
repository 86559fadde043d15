"""Record a matrix's cases as ``harness run`` does, in this one process: ``python -m tests.record_cases MATRIX OUT
CACHE``, with another timm release first on PYTHONPATH.

The cases go through :func:`harness.case.runner.run_case`, what harness run's workers call, and the folder gets the
same run.json and results.jsonl; what is left out is pytest and its worker processes, which cost a test
running an old release twice the imports. Checks only (no timing).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from harness.case.runner import run_case
from harness.case.work import CheckpointWork, RunOptions
from harness.results import append_result
from harness.spec.cases import expand
from harness.spec.matrix import load_matrix
from harness.store.run_record import describe_run, mark_finished, write_run_record


def record(matrix_path: Path, out: Path, cache: Path) -> None:
    matrix = load_matrix(matrix_path)
    timing = matrix.timing.for_run('cpu', enabled=False)
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, describe_run(matrix, torch.device('cpu'), timing, ['harness', 'run', str(matrix_path)]))
    work = CheckpointWork(matrix, RunOptions(torch.device('cpu'), cache, out, timing))
    for case in expand(matrix):
        append_result(out, run_case(case, work))
    mark_finished(out)


if __name__ == '__main__':
    record(*map(Path, sys.argv[1:4]))
