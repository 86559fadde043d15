"""A pytest plugin for tests/test_harness_faults.py, passed through
`harness run ... -p tests.swap_file_after_first_case`: once the first case has run, the file that
``HARNESS_SWAP_SOURCE`` names replaces the one ``HARNESS_SWAP_TARGET`` names (a user's checkpoint replaced
while its cases run). `harness run` hands unknown options to pytest, which loads the plugin in each worker;
their PYTHONPATH must reach the repository.
"""
from __future__ import annotations

import os

import pytest

SOURCE_ENV, TARGET_ENV = 'HARNESS_SWAP_SOURCE', 'HARNESS_SWAP_TARGET'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    yield
    if os.path.exists(os.environ[SOURCE_ENV]):
        os.replace(os.environ[SOURCE_ENV], os.environ[TARGET_ENV])
