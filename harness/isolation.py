"""One case's crash or hang must not take the run down.

Cases always run in pytest-xdist worker processes. A case that kills its worker (a segfault, an abort, the
kernel's out-of-memory killer) is recorded by the controller as ``error`` with a ``crash:`` reason, and xdist
starts a replacement worker for the cases left. A case that runs past ``--case-timeout`` is recorded by its
own worker's watchdog as ``error`` with a ``timeout:`` reason, and the watchdog then ends the worker the same
way. A record is written once: the controller records a crash only when the worker wrote nothing for it.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest
from xdist.scheduler import LoadGroupScheduling

from harness.results import RESULTS_FILE, CaseResult, append_result

if TYPE_CHECKING:   # the controller imports this module before its workers start: nothing that imports torch
    from harness.cases import Case
    from harness.matrix import Matrix
    from harness.pipeline import RunOptions

TIMEOUT_EXIT_STATUS = 70   # what a worker ended by its watchdog exits with (EX_SOFTWARE)
STACK_FRAMES = 4           # innermost frames of a hung case that its timeout record shows
RUN_REFUSED = pytest.StashKey[bool]()   # set by harness.run_start when the run did not start: no case may run


class CaseScheduling(LoadGroupScheduling):
    """xdist's ``loadgroup`` scheduling (a checkpoint's cases on one worker, in a row), safe for cases that kill
    their worker. pytest-xdist 3.8 gets a worker's death wrong three ways, each fixed here:

    - it puts the case that killed the worker back on the queue, so the replacement runs it again and dies of
      it, until ``--max-worker-restart`` is spent (pytest-xdist pull request #1371): here it is never rerun;
    - it puts groups the worker had finished back too, which go out as empty work that never completes, so
      the run hangs (issue #1323); and a replacement given a single case waits for a second one before it
      runs it (issue #1327): here only unstarted cases go back, and a worker is told when no more will come;
    - it gives work to a replacement that is still collecting, an internal error (issues #1189, #1362): here
      such a worker gets its work once it has collected.

    And it hands out no case at all when the run was refused before its start (:mod:`harness.run_start`).
    """

    def schedule(self) -> None:
        if not self.config.stash.get(RUN_REFUSED, False):
            super().schedule()

    def remove_node(self, node) -> str | None:
        workload = self.assigned_work.pop(node)
        unfinished = [(group, nodeid) for group, unit in workload.items() for nodeid, done in unit.items() if not done]
        if not unfinished:
            return None
        group, crashed = unfinished[0]
        workload[group][crashed] = True   # recorded as crashed, never run again
        for group, unit in workload.items():
            if not all(unit.values()):
                self.workqueue[group] = unit
        for other in self.nodes:
            self._reschedule(other)
        return crashed

    def _reschedule(self, node) -> None:
        if node not in self.registered_collections:   # still collecting: scheduled when it is done
            return
        super()._reschedule(node)
        if not self.workqueue and not node.shutting_down:
            node.shutdown()


class CrashRecorder:
    """Registered in the xdist controller: records the case a worker died running.

    The controller collects no items, so the case is found in its matrix and recorded with the options the
    workers use. Records that this run wrote before (from the offset the results file had when it started:
    ``--resume`` keeps older ones) are left alone: the worker may have recorded the case before it died.
    """

    def __init__(self, out_dir: Path, rootpath: Path, options_for: Callable[[Matrix], RunOptions]):
        self.out_dir = out_dir
        self.rootpath = rootpath
        self.options_for = options_for
        results = out_dir / RESULTS_FILE
        self.results_offset = results.stat().st_size if results.exists() else 0
        self.started: dict[str, float] = {}   # node id -> monotonic time its case started

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.started[nodeid] = time.monotonic()

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport) -> None:
        matrix, case = self._case_of(crashitem)
        record = self._record_of_this_run(matrix.name, case.case_id)
        if record is None:
            duration = time.monotonic() - self.started.get(crashitem, time.monotonic())
            reason = f'crash: the worker process died while running this case ({_worker_end(report.node)})'
            result = error_result(case, matrix, self.options_for(matrix), reason, duration)
            append_result(self.out_dir, result)
            record = {'status': result.status, 'reason': result.reason}
        report.longrepr = f"{record['status']}: {record['reason']}"   # what the terminal shows for the case

    def _case_of(self, nodeid: str) -> tuple[Matrix, Case]:
        """The case of a node id such as ``vit.yaml::<case id>@<group>`` (the group under ``--dist loadgroup``)."""
        from harness.cases import expand
        from harness.matrix import load_matrix
        file = nodeid.split('::', 1)[0]
        matrix = load_matrix(self.rootpath / file)   # validated by the workers already
        for case in expand(matrix):
            if nodeid in (f'{file}::{case.case_id}', f'{file}::{case.case_id}@{case.group}'):
                return matrix, case
        raise LookupError(f'{nodeid}: no such case in {self.rootpath / file}')

    def _record_of_this_run(self, matrix_name: str, case_id: str) -> dict | None:
        results = self.out_dir / RESULTS_FILE
        if not results.exists():
            return None
        with open(results) as f:
            f.seek(self.results_offset)
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:   # a line cut short by a crash
                continue
            if (record.get('matrix'), record.get('case_id')) == (matrix_name, case_id):
                return record
        return None


def _worker_end(node) -> str:
    """How the worker ended, e.g. ``killed by SIGSEGV``, as far as execnet tells."""
    popen = getattr(getattr(node.gateway, '_io', None), 'popen', None)   # execnet's popen gateways keep it
    try:
        status = popen.wait(timeout=10) if popen is not None else None
    except subprocess.TimeoutExpired:
        status = None
    if status is None:
        return 'its traceback, if Python printed one, is above'
    if status < 0:
        name = signal.Signals(-status).name
        return f'killed by {name}' + (': perhaps the kernel\'s out-of-memory killer' if name == 'SIGKILL' else '')
    return f'exit status {status}'


@contextlib.contextmanager
def deadline(seconds: float, on_timeout: Callable[[str], None]) -> Iterator[None]:
    """Run the body under a watchdog: past ``seconds``, call ``on_timeout`` with the body's innermost stack
    frames, then end the process. 0 means no deadline.

    A hung case may be stuck where no exception reaches it (a sleep, a deadlock in a native library), so the
    watchdog thread records it itself and ends the worker with ``os._exit``; xdist then replaces the worker.
    The lock makes finishing and expiring exclusive: a case is never recorded twice.
    """
    if not seconds:
        yield
        return
    lock, finished, body = threading.Lock(), threading.Event(), threading.get_ident()

    def expire() -> None:
        with lock:
            if finished.is_set():
                return
            on_timeout(''.join(traceback.format_stack(sys._current_frames()[body], limit=STACK_FRAMES)))
            os._exit(TIMEOUT_EXIT_STATUS)

    watchdog = threading.Timer(seconds, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        with lock:
            finished.set()
        watchdog.cancel()


def error_result(case: Case, matrix: Matrix, options: RunOptions, reason: str, duration_s: float) -> CaseResult:
    """The record of a case the harness could not finish (crash, timeout)."""
    from harness.pipeline import finished, new_result
    result = new_result(case, matrix, options)
    result.status, result.reason = 'error', reason
    return finished(result, duration_s)
