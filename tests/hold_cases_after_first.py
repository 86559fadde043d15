"""A pytest plugin for the interrupt tests, passed through `harness run ... -p tests.hold_cases_after_first`.

Tiny cases finish within milliseconds of each other, so a signal sent once the first is recorded could land
after the last one: the test would prove nothing, or fail at random. Holding every later case makes the signal
always land while cases are left. `harness run` hands unknown options to pytest, which loads the plugin in each
worker.
"""
from __future__ import annotations

import time

import pytest

HOLD_S = 600   # longer than any test waits: the signal, not the hold, must end the case

_cases_started = 0


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    global _cases_started
    _cases_started += 1
    if _cases_started > 1:
        time.sleep(HOLD_S)
