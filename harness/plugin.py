"""The pytest plugin that turns a matrix file into test items, one per case (:mod:`harness.items`).

Running cases as pytest items gives users what they already know: ``-k`` selection, ``-n`` (xdist)
parallelism, ``--junitxml``, readable ids and progress. ``harness run`` drives pytest with this plugin;
``pytest -p harness.plugin matrices/smoke.yaml --harness-out DIR`` works too.

Under xdist (``harness run`` always uses it) a case that kills its worker or overruns ``--harness-case-timeout``
is recorded as ``error`` and the run goes on: see :mod:`harness.isolation`.

This module is imported by the xdist controller too, which collects nothing: it imports neither torch nor
timm, which cost seconds of CPU per process; the workers need both, and the first of them checks the run for
the controller (:mod:`harness.run_start`).
"""
from __future__ import annotations

import functools
from dataclasses import asdict
from pathlib import Path

import pytest

from harness import option_types
from harness.device_lock import Holder
from harness.matrix import Selection
from harness.option_types import positive_int
from harness.progress import PROGRESS_INTERVAL_S, ProgressReporter
from harness.results import DTYPES, PRECISIONS, RESULTS_FILE, finished_case_ids

UNSUPPORTED_PREFIX = 'unsupported: '
# timing settings the command line sets over the matrix's, each as --harness-<name with dashes> (None: not set)
TIMING_OPTIONS = ('batch_size', 'dtype', 'precision', 'compile', 'channels_last', 'max_cv', 'threads')


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('harness', 'timm-harness')
    group.addoption('--harness-out', default=None, help='folder for results.jsonl (enables matrix collection)')
    group.addoption('--harness-device', default=None, help='cpu or cuda (default: cuda when available)')
    group.addoption('--harness-cache', default=None, help='cache folder for synthesized checkpoints and locks')
    group.addoption('--harness-resume', action='store_true', help='skip cases already in results.jsonl')
    group.addoption('--harness-batch-size', type=positive_int, default=None,
                    help="timing batch size (matrix's default)")
    group.addoption('--harness-dtype', choices=DTYPES, default=None, help="timing dtype (matrix's default)")
    group.addoption('--harness-precision', choices=PRECISIONS, default=None,
                    help="how a reduced timing dtype is applied (matrix's default)")
    group.addoption('--harness-compile', action='store_true', default=None, help='time through torch.compile')
    group.addoption('--harness-channels-last', action='store_true', default=None, help='time in channels-last')
    group.addoption('--harness-max-cv', type=option_types.max_cv, default=None,
                    help="timing stability limit (matrix's default)")
    group.addoption('--harness-threads', type=positive_int, default=None,
                    help="torch's threads per worker (matrix's default)")
    group.addoption('--harness-progress-interval', type=float, default=PROGRESS_INTERVAL_S, metavar='SECONDS',
                    help='seconds between progress lines (cases done, elapsed, estimate of the time left)')
    group.addoption('--harness-no-timing', action='store_true', help='run the checks only')
    group.addoption('--harness-images', default=None, metavar='DIR',
                    help="labelled images for top-1 accuracy (default: the matrix's images:)")
    group.addoption('--harness-shard', type=option_types.parse_shard, default=None, metavar='K/N',
                    help='only shard K of N (1-based): every N-th model entry, from the K-th')
    group.addoption('--harness-full-size', action='store_true',
                    help='zoo entries (models: [{zoo: GLOB}]) at their real configuration instead of in miniature')
    group.addoption('--harness-case-timeout', type=option_types.case_timeout_s, default=0, metavar='SECONDS',
                    help='record a case running longer as error and end its process, even one stuck holding the '
                         'GIL or stopped (0 = no limit; meant for xdist workers, which are replaced)')


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption('--harness-out') and hasattr(config, 'workerinput'):   # an xdist worker
        from harness.interruption import stop_on_sigterm
        stop_on_sigterm()
    if config.getoption('--harness-out') and not hasattr(config, 'workerinput'):   # not in an xdist worker
        from harness.isolation import CrashRecorder
        from harness.watchdog import WorkerWatchdog
        out = Path(config.getoption('--harness-out'))
        watchdog = WorkerWatchdog(config.getoption('--harness-case-timeout'))
        config.pluginmanager.register(watchdog, 'harness-watchdog')
        recorder = CrashRecorder(out, config.rootpath, functools.partial(_run_options, config), watchdog,
                                 selection(config))
        config.pluginmanager.register(recorder, 'harness-crash-recorder')
        progress = ProgressReporter(config, config.getoption('--harness-progress-interval'))
        config.pluginmanager.register(progress, 'harness-progress')


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    if config.getoption('--harness-out') and config.getoption('dist') == 'loadgroup':
        from harness.isolation import CaseScheduling
        return CaseScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Workers name the run as the process the user started, when they tell other runs they hold the device."""
    node.workerinput['harness_holder'] = asdict(Holder.this_process())


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if parent.config.getoption('--harness-out') and file_path.suffix in ('.yaml', '.yml') \
            and parent.session.isinitpath(file_path):
        from harness.items import MatrixFile
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption('--harness-resume'):
        return
    from harness.items import CaseItem
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


def selection(config: pytest.Config) -> Selection:
    """The part of the matrix file this run takes (--harness-shard, --harness-full-size)."""
    return Selection(config.getoption('--harness-shard'), bool(config.getoption('--harness-full-size')))


def _run_options(config: pytest.Config, matrix):
    from harness.items import run_options  # imports torch: only when a crash is recorded
    return run_options(config, matrix)
