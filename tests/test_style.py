"""The source passes the linter the project configures (ruff, pyproject.toml [tool.ruff]): the codes its noqa
comments name are checked, not just mentioned. `.ci/run` installs ruff; elsewhere the test says how to."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.conftest import REPO

LINTED = ('harness', 'tests', 'benchmarks', 'scripts')   # every folder of Python source


def test_ruff_is_clean():
    if importlib.util.find_spec('ruff') is None:
        pytest.skip('ruff is not installed: pip install ruff (as .ci/run does)')
    done = subprocess.run([sys.executable, '-m', 'ruff', 'check', '--no-cache', *LINTED],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
