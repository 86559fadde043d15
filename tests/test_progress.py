"""Progress on long runs: cases done of the total, time elapsed, an estimate of the time left."""
from __future__ import annotations

from types import SimpleNamespace

from harness.progress import Progress, ProgressReporter, duration


class Clock:
    def __init__(self):
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_estimate_is_the_pace_so_far_over_the_cases_left():
    clock = Clock()
    progress = Progress(66, clock=clock)
    assert progress.line() == '0/66 cases, 0s elapsed'   # no pace yet: no estimate
    clock.now_s += 185
    progress.done = 12
    assert progress.left_s() == 185 / 12 * 54
    assert progress.line() == '12/66 cases, 3m05s elapsed, about 13m52s left'
    progress.done = 66
    assert progress.line() == '66/66 cases, 3m05s elapsed'


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (0, 42.4, 60, 185, 3599, 3600, 3725, 90000)] == [
        '0s', '42s', '1m00s', '3m05s', '59m59s', '1h00m', '1h02m', '25h00m']


class Terminal:
    def __init__(self):
        self.lines: list[str] = []

    def write_line(self, line: str) -> None:
        self.lines.append(line)


def test_reporter_counts_finished_cases_crashes_included_and_prints_at_most_every_interval():
    clock, terminal = Clock(), Terminal()
    config = SimpleNamespace(pluginmanager=SimpleNamespace(getplugin=lambda name: terminal))
    reporter = ProgressReporter(config, interval_s=30.0, clock=clock)
    reporter.pytest_xdist_node_collection_finished(node=None, ids=[f'case{i}' for i in range(4)])
    reporter.pytest_xdist_node_collection_finished(node=None, ids=[f'case{i}' for i in range(4)])   # 2nd worker
    for when, after_s in (('setup', 10), ('call', 0), ('teardown', 0), ('teardown', 25), ('???', 20)):
        clock.now_s += after_s
        reporter.pytest_runtest_logreport(SimpleNamespace(when=when))
    assert reporter.progress.done == 3   # two cases' teardowns and a case its worker died in
    assert terminal.lines == ['progress: 2/4 cases, 35s elapsed, about 35s left']   # once 30 s had passed
    clock.now_s += 60
    reporter.pytest_runtest_logreport(SimpleNamespace(when='teardown'))
    assert len(terminal.lines) == 1   # the last case: pytest's own summary follows
