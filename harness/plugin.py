"""The pytest plugin that turns a matrix file into test items, one per case (:mod:`harness.runtime.items`).

Running cases as pytest items gives users what they already know: ``-k`` selection, ``-n`` (xdist)
parallelism, ``--junitxml``, readable ids and progress. ``harness run`` drives pytest with this plugin;
``pytest -p harness.plugin matrices/smoke.yaml --harness-out DIR`` works too.

Under xdist (``harness run`` always uses it) a case that kills its worker or overruns ``--harness-case-timeout``
is recorded as ``error`` and the run goes on: see :mod:`harness.runtime.isolation`.

This module is imported by the xdist controller too, which collects nothing: it imports neither torch nor
timm, which cost seconds of CPU per process; the workers need both, and the first of them checks the run for
the controller (:mod:`harness.runtime.run_start`).
"""
from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import pytest

from harness.option_types import PLUGIN_PREFIX, add_run_options, selection
from harness.progress import PROGRESS_INTERVAL_S, ProgressReporter
from harness.results import RESULTS_FILE, finished_case_ids
from harness.runtime.device_lock import Holder
from harness.store.case_result import UNSUPPORTED_PREFIX


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('harness', 'timm-harness')
    group.addoption('--harness-out', default=None, help='folder for results.jsonl (enables matrix collection)')
    add_run_options(group.addoption, PLUGIN_PREFIX)
    group.addoption('--harness-progress-interval', type=float, default=PROGRESS_INTERVAL_S, metavar='SECONDS',
                    help='seconds between progress lines (cases done, elapsed, estimate of the time left)')


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption('--harness-out') and hasattr(config, 'workerinput'):   # an xdist worker
        from harness.runtime.interruption import stop_on_sigterm
        stop_on_sigterm()
    if config.getoption('--harness-out') and not hasattr(config, 'workerinput'):   # not in an xdist worker
        from harness.runtime.isolation import CrashRecorder, xdist_problem
        from harness.runtime.watchdog import WorkerWatchdog
        problem = xdist_problem() if config.getoption('dist', None) == 'loadgroup' else None
        if problem:
            raise pytest.UsageError(problem)
        out = Path(config.getoption('--harness-out'))
        watchdog = WorkerWatchdog(config.getoption('--harness-case-timeout'))
        config.pluginmanager.register(watchdog, 'harness-watchdog')
        recorder = CrashRecorder(out, config.rootpath, functools.partial(_run_options, config), watchdog,
                                 selection(config.getoption))
        config.pluginmanager.register(recorder, 'harness-crash-recorder')
        progress = ProgressReporter(config, config.getoption('--harness-progress-interval'))
        config.pluginmanager.register(progress, 'harness-progress')


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getoption('--harness-out') and config.getoption('dist') == 'loadgroup':
        from harness.runtime.isolation import CaseScheduling
        return CaseScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Workers name the run as the process the user started, when they tell other runs they hold the device."""
    node.workerinput['harness_holder'] = asdict(Holder.this_process())


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if parent.config.getoption('--harness-out') and file_path.suffix in ('.yaml', '.yml') \
            and parent.session.isinitpath(file_path):
        from harness.runtime.items import MatrixFile
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption('--harness-resume'):
        return
    from harness.runtime.items import CaseItem
    results = Path(config.getoption('--harness-out')) / RESULTS_FILE
    finished = {(m.name, case_id) for m in {i.matrix for i in items if isinstance(i, CaseItem)}
                for case_id in finished_case_ids(results, m.name)}
    done, keep = [], []
    for item in items:
        is_done = isinstance(item, CaseItem) and (item.matrix.name, item.case_id) in finished
        (done if is_done else keep).append(item)
    if done:
        config.hook.pytest_deselected(items=done)
        items[:] = keep


def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    if report.when == 'call' and report.skipped and UNSUPPORTED_PREFIX in str(report.longrepr):
        return 'unsupported', 'u', 'UNSUPPORTED'
    return None


def _run_options(config: pytest.Config, matrix):
    from harness.runtime.items import run_options  # imports torch: only when a crash is recorded
    return run_options(config, matrix)
