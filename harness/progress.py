"""How far a long run has got: cases done of the total, time elapsed and an estimate of the time left.

:class:`Progress` is the arithmetic (the estimate assumes the cases left take as long on average as those
done); :class:`ProgressReporter` is the pytest plugin that ``harness run`` registers in the controller, which
prints a line at most every ``--harness-progress-interval`` seconds (default 30), between the cases' own lines:

    progress: 12/66 cases, 3m05s elapsed, about 13m53s left
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

PROGRESS_INTERVAL_S = 30.0


@dataclass
class Progress:
    total: int
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    started_s: float = field(init=False)

    def __post_init__(self):
        self.started_s = self.clock()

    def elapsed_s(self) -> float:
        return self.clock() - self.started_s

    def left_s(self) -> float | None:
        """The cases left at the average pace so far; None before the first case is done."""
        if not self.done:
            return None
        return self.elapsed_s() / self.done * max(self.total - self.done, 0)

    def line(self) -> str:
        """'12/66 cases, 3m05s elapsed, about 13m53s left'."""
        left = self.left_s()
        estimate = f', about {duration(left)} left' if left is not None and self.done < self.total else ''
        return f'{self.done}/{self.total} cases, {duration(self.elapsed_s())} elapsed{estimate}'


def duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m."""
    seconds = round(seconds)
    if seconds < 60:
        return f'{seconds}s'
    if seconds < 3600:
        return f'{seconds // 60}m{seconds % 60:02d}s'
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class ProgressReporter:
    """pytest plugin for the controller: counts finished cases (a crashed case too) and prints progress lines.

    The total is what the workers collected (under xdist), or what this process collected (without it)."""

    def __init__(self, config: pytest.Config, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.interval_s = interval_s
        self.clock = clock
        self.progress: Progress | None = None
        self.printed_s = clock()

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        if self.progress is None:
            self.progress = Progress(len(ids), clock=self.clock)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.progress is None and session.items:
            self.progress = Progress(len(session.items), clock=self.clock)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.progress is None or report.when not in ('teardown', '???'):   # '???': a case its worker died in
            return
        self.progress.done += 1
        if self.clock() - self.printed_s >= self.interval_s and self.progress.done < self.progress.total:
            self.printed_s = self.clock()
            reporter = self.config.pluginmanager.getplugin('terminalreporter')
            if reporter is not None:
                reporter.write_line(f'progress: {self.progress.line()}')
