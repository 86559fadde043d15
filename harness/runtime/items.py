"""The pytest items of a run: one per case, collected from a matrix file (in the xdist workers).

Each item runs :func:`harness.case.runner.run_case`, appends its record to ``results.jsonl`` at once, and then
reports the status to pytest: ``unsupported`` as a skip, ``xfailed`` as an xfail, ``failed``/``xpassed``/
``error``/``resource`` as a failure whose message is the reason (no traceback: the reason is the finding).
A case that overruns ``--harness-case-timeout`` is ended by the watchdogs of :mod:`harness.runtime.watchdog`.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from harness import faults
from harness.cache import default_cache_dir
from harness.case.runner import run_case
from harness.case.work import CheckpointWork, RunOptions
from harness.option_types import TIMING_OPTIONS, selection
from harness.results import RESULTS_FILE, append_result
from harness.runtime.device_lock import Holder
from harness.runtime.isolation import error_result
from harness.runtime.run_start import StartRefused, check_release, hand_over, start_request
from harness.runtime.watchdog import deadline, timeout_reason
from harness.spec.cases import Case, expand, in_shard
from harness.spec.matrix import Matrix, MatrixError, load_matrix
from harness.store.case_result import UNSUPPORTED_PREFIX, CaseResult
from harness.timing.forward import use_threads


class CaseFailed(Exception):
    """A case whose status is unexpected; its message is the case's reason."""


class MatrixFile(pytest.File):
    def collect(self):
        import timm
        request = start_request(self.config)   # this worker describes the run (harness.runtime.run_start)
        try:
            if request:
                check_release(request)
            matrix = load_matrix(self.path, known_models=timm.list_models(), selection=selection(self.config.getoption))
            options = run_options(self.config, matrix)
            if request:
                hand_over(request, matrix, options)
        except (MatrixError, StartRefused) as e:
            raise self.CollectError(str(e)) from None
        work = CheckpointWork(matrix, options)
        for case in in_shard(expand(matrix), matrix.selection):
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
        _recorded(Path(self.config.getoption('--harness-out')), result)
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
        reason = timeout_reason(seconds, f'it was at\n{stack}')
        append_result(Path(self.config.getoption('--harness-out')),
                      error_result(self.case, self.matrix, self.work.options, reason, seconds))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CaseFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, self.case_id


def _recorded(out: Path, result: CaseResult) -> None:
    """``result`` appended to the run's results; a full disk is the case's one-line error, not a traceback."""
    try:
        append_result(out, result)
    except OSError as e:
        if not faults.is_disk_full(e):
            raise
        raise CaseFailed(f'error: disk full: the record of this case ({result.status}) could not be written to '
                         f'{out / RESULTS_FILE}: {e}') from None


def run_options(config: pytest.Config, matrix: Matrix) -> RunOptions:
    """How the cases of ``matrix`` run, from the plugin's command-line options."""
    device = config.getoption('--harness-device') or ('cuda' if torch.cuda.is_available() else 'cpu')
    timing = matrix.timing.for_run(device, enabled=not config.getoption('--harness-no-timing'),
                                   **{name: config.getoption(f'--harness-{name.replace("_", "-")}')
                                      for name in TIMING_OPTIONS})
    use_threads(timing)
    cache = config.getoption('--harness-cache') or default_cache_dir()
    images = config.getoption('--harness-images') or matrix.images   # the command line's over the matrix's
    return RunOptions(device=torch.device(device), cache_dir=Path(cache),
                      out_dir=Path(config.getoption('--harness-out')), timing=timing,
                      images=Path(images) if images else None,
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
