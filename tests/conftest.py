"""Shared fixtures: a checkpoint cache for the whole session, and a way to run cases of a YAML matrix."""
from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from harness.cases import expand
from harness.matrix import TimingConfig, load_matrix
from harness.pipeline import CheckpointWork, RunOptions, run_case

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
