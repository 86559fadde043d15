"""The pytest plugin that turns a matrix file into test items, one per case.

Running cases as pytest items gives users what they already know: ``-k`` selection, ``-n`` (xdist)
parallelism, ``--junitxml``, readable ids and progress. ``harness run`` drives pytest with this plugin;
``pytest -p harness.plugin matrices/smoke.yaml --harness-out DIR`` works too.

Each item runs :func:`harness.pipeline.run_case`, appends its record to ``results.jsonl`` at once, and then
reports the status to pytest: ``unsupported`` as a skip, ``xfailed`` as an xfail, ``failed``/``xpassed``/
``error``/``resource`` as a failure whose message is the reason (no traceback: the reason is the finding).

Under xdist (``harness run`` always uses it) a case that kills its worker or overruns ``--harness-case-timeout``
is recorded as ``error`` and the run goes on: see :mod:`harness.isolation`.
"""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pytest
import torch

from harness.cache import default_cache_dir
from harness.cases import Case, expand
from harness.device_lock import Holder
from harness.isolation import CaseScheduling, CrashRecorder, deadline, error_result
from harness.matrix import DTYPES, Matrix, MatrixError, load_matrix
from harness.pipeline import CheckpointWork, RunOptions, run_case
from harness.results import RESULTS_FILE, append_result, finished_case_ids

UNSUPPORTED_PREFIX = 'unsupported: '


class CaseFailed(Exception):
    """A case whose status is unexpected; its message is the case's reason."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup('harness', 'timm-harness')
    group.addoption('--harness-out', default=None, help='folder for results.jsonl (enables matrix collection)')
    group.addoption('--harness-device', default=None, help='cpu or cuda (default: cuda when available)')
    group.addoption('--harness-cache', default=None, help='cache folder for synthesized checkpoints and locks')
    group.addoption('--harness-resume', action='store_true', help='skip cases already in results.jsonl')
    group.addoption('--harness-batch-size', type=int, default=None, help="timing batch size (matrix's default)")
    group.addoption('--harness-dtype', choices=DTYPES, default=None, help="timing dtype (matrix's default)")
    group.addoption('--harness-no-timing', action='store_true', help='run the checks only')
    group.addoption('--harness-case-timeout', type=float, default=0, metavar='SECONDS',
                    help='record a case running longer as error and end its process (0 = no limit; meant for '
                         'xdist workers, which are replaced)')


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption('--harness-out') and not hasattr(config, 'workerinput'):   # not in an xdist worker
        out = Path(config.getoption('--harness-out'))
        recorder = CrashRecorder(out, config.rootpath, lambda matrix: _options(config, matrix))
        config.pluginmanager.register(recorder, 'harness-crash-recorder')


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> CaseScheduling | None:
    if config.getoption('--harness-out') and config.getoption('dist') == 'loadgroup':
        return CaseScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """Workers name the run as the process the user started, when they tell other runs they hold the device."""
    node.workerinput['harness_holder'] = asdict(Holder.this_process())


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    if parent.config.getoption('--harness-out') and file_path.suffix in ('.yaml', '.yml') \
            and parent.session.isinitpath(file_path):
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption('--harness-resume'):
        return
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


class MatrixFile(pytest.File):
    def collect(self):
        import timm
        try:
            matrix = load_matrix(self.path, known_models=timm.list_models())
        except MatrixError as e:
            raise self.CollectError(str(e)) from None
        work = CheckpointWork(matrix, _options(self.config, matrix))
        for case in expand(matrix):
            item = CaseItem.from_parent(self, name=case.case_id, case=case, matrix=matrix, work=work)
            item.add_marker(pytest.mark.xdist_group(case.group))
            yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, matrix: Matrix, work: CheckpointWork, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        self.matrix = matrix
        self.work = work

    @property
    def case_id(self) -> str:
        return self.case.case_id

    def runtest(self) -> None:
        with deadline(self.config.getoption('--harness-case-timeout'), self._record_timeout):
            result = run_case(self.case, self.work)
        append_result(Path(self.config.getoption('--harness-out')), result)
        for name in ('status', 'reason', 'parity_max_abs_diff', 'fidelity_weights_max_abs_diff', 'time_median_ms'):
            self.user_properties.append((name, getattr(result, name)))
        if result.status == 'unsupported':
            pytest.skip(UNSUPPORTED_PREFIX + result.reason)
        if result.status == 'xfailed':
            pytest.xfail(result.reason)
        if result.status != 'passed':
            raise CaseFailed(f'{result.status}: {result.reason}')

    def _record_timeout(self, stack: str) -> None:
        seconds = self.config.getoption('--harness-case-timeout')
        reason = f'timeout: the case ran longer than {seconds:g} s; it was at\n{stack}'
        append_result(Path(self.config.getoption('--harness-out')),
                      error_result(self.case, self.matrix, self.work.options, reason, seconds))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.case_id


def _options(config: pytest.Config, matrix: Matrix) -> RunOptions:
    device = config.getoption('--harness-device') or ('cuda' if torch.cuda.is_available() else 'cpu')
    timing = matrix.timing.for_run(device, config.getoption('--harness-batch-size'),
                                   config.getoption('--harness-dtype'), enabled=not config.getoption('--harness-no-timing'))
    cache = config.getoption('--harness-cache') or default_cache_dir()
    return RunOptions(device=torch.device(device), cache_dir=Path(cache),
                      out_dir=Path(config.getoption('--harness-out')), timing=timing,
                      say=_terminal_line(config), holder=_holder(config))


def _terminal_line(config: pytest.Config) -> Callable[[str], None]:
    """``say`` for the pipeline: one line on the user's terminal, past pytest's output capture.

    In an xdist worker stdout leads nowhere (execnet talks over it), but stderr is still the terminal's. The
    line starts on a line of its own: the terminal may be mid-line (pytest -v writes a case's id, then later
    its outcome).
    """
    capture = config.pluginmanager.getplugin('capturemanager')

    def say(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f'\n{line}', file=sys.stderr, flush=True)
    return say


def _holder(config: pytest.Config) -> Holder:
    """The run as other runs waiting for the device are told about it: in a worker, the controller."""
    if hasattr(config, 'workerinput'):
        return Holder(**config.workerinput['harness_holder'])
    return Holder.this_process()
