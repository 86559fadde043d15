"""Every benchmark script starts as README documents it, `python benchmarks/NAME.py`, from any folder: each
imports its siblings from its own folder (not as a `benchmarks` package, which only a PYTHONPATH would find)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = ('calibrate', 'compare_noise', 'error_latency', 'gpu_vs_timm_benchmark', 'mutation_score', 'overhead',
           'threads', 'timing_budget')


@pytest.mark.parametrize('name', SCRIPTS)
def test_script_starts_as_documented(name, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / 'benchmarks' / f'{name}.py'), '--help'], cwd=tmp_path,
                          capture_output=True, text=True, env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)})
    assert done.returncode == 0 and done.stdout.startswith('usage: '), done.stderr[-2000:]
