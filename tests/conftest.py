"""Shared fixtures: a checkpoint cache for the whole session, and a way to run cases of a YAML matrix."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import timm
import torch

from harness.cases import expand
from harness.matrix import TimingConfig, load_matrix
from harness.pipeline import RunContext, RunOptions, run_case

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def known_models() -> list[str]:
    return timm.list_models()


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory) -> Path:
    """Synthesized checkpoints are reused across tests, as they are across runs."""
    return tmp_path_factory.mktemp('cache')


@pytest.fixture
def write_matrix(tmp_path):
    def write(text: str, name: str = 'matrix.yaml') -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write


@pytest.fixture
def run_matrix(write_matrix, cache_dir, known_models):
    """Run every case of a matrix in-process (fresh context: nothing memoised from another test)."""
    def run(text: str, timing: bool = False) -> dict:
        matrix = load_matrix(write_matrix(text), known_models)
        options = RunOptions(torch.device('cpu'), cache_dir,
                             TimingConfig(enabled=timing, batch_size=2, warmup=0, repeats=2))
        context = RunContext(matrix, options)
        return {case.case_id: run_case(case, case.case_id, context) for case in expand(matrix)}
    return run
