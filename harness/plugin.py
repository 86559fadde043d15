"""The pytest plugin that turns a matrix file into test items, one per case.

Running cases as pytest items gives users what they already know: ``-k`` selection, ``-n`` (xdist)
parallelism, ``--junitxml``, readable ids and progress. ``harness run`` drives pytest with this plugin;
``pytest -p harness.plugin matrices/smoke.yaml --harness-out DIR`` works too.

Each item runs :func:`harness.pipeline.run_case`, appends its record to ``results.jsonl`` at once, and then
reports the status to pytest: ``unsupported`` as a skip, ``xfailed`` as an xfail, ``failed``/``xpassed``/
``error`` as a failure whose message is the reason (no traceback: the reason is the finding).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from harness.cases import Case, expand
from harness.matrix import DTYPES, Matrix, MatrixError, load_matrix
from harness.pipeline import RunContext, RunOptions, run_case
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
        context = RunContext(matrix, _options(self.config, matrix))
        for case in expand(matrix):
            item = CaseItem.from_parent(self, name=case.case_id, case=case, matrix=matrix, context=context)
            item.add_marker(pytest.mark.xdist_group(case.group))
            yield item


class CaseItem(pytest.Item):
    def __init__(self, *, case: Case, matrix: Matrix, context: RunContext, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        self.matrix = matrix
        self.context = context

    @property
    def case_id(self) -> str:
        return self.case.case_id

    def runtest(self) -> None:
        result = run_case(self.case, self.case_id, self.context)
        append_result(Path(self.config.getoption('--harness-out')), result)
        for name in ('status', 'reason', 'parity_max_abs_diff', 'fidelity_weights_max_abs_diff', 'time_median_ms'):
            self.user_properties.append((name, getattr(result, name)))
        if result.status == 'unsupported':
            pytest.skip(UNSUPPORTED_PREFIX + result.reason)
        if result.status == 'xfailed':
            pytest.xfail(result.reason)
        if result.status != 'passed':
            raise CaseFailed(f'{result.status}: {result.reason}')

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.case_id


def _options(config: pytest.Config, matrix: Matrix) -> RunOptions:
    device = config.getoption('--harness-device') or ('cuda' if torch.cuda.is_available() else 'cpu')
    timing = matrix.timing
    if config.getoption('--harness-batch-size'):
        timing = dataclasses.replace(timing, batch_size=config.getoption('--harness-batch-size'))
    if config.getoption('--harness-dtype'):
        timing = dataclasses.replace(timing, dtype=config.getoption('--harness-dtype'))
    if config.getoption('--harness-no-timing'):
        timing = dataclasses.replace(timing, enabled=False)
    cache = config.getoption('--harness-cache') or default_cache_dir()
    return RunOptions(device=torch.device(device), cache_dir=Path(cache), timing=timing)


def default_cache_dir() -> Path:
    root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(root) / 'timm-harness'
