"""Regression test-and-benchmark harness for resizing timm models (README.md).

From Python: :func:`harness.run` runs a matrix and returns its results as a DataFrame;
:func:`harness.results.load` reads an earlier run's. Nothing heavy is imported here: the command line starts
without torch or timm.
"""
from __future__ import annotations

from typing import Any


def run(matrix: Any, out: Any = None, **options: Any) -> Any:
    """:func:`harness.api.run`: run a matrix file or dict, return a ``pandas.DataFrame`` of its results."""
    from harness.api import run as run_matrix
    return run_matrix(matrix, out, **options)
