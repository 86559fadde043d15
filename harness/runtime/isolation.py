"""One case's crash or hang must not take the run down.

Cases always run in pytest-xdist worker processes. A case that kills its worker (a segfault, an abort, the
kernel's out-of-memory killer) is recorded by the controller as ``error`` with a ``crash:`` reason, and xdist
starts a replacement worker for the cases left. A case that runs past ``--case-timeout`` is ended by a watchdog
(:mod:`harness.runtime.watchdog`) and recorded as ``error`` with a ``timeout:`` reason, by its own worker or, when the
worker could not, here; its worker is replaced the same way. A record is written once: the controller records
a crash only when the worker wrote nothing for it.
"""
from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pytest
from xdist.scheduler import LoadGroupScheduling

from harness.results import RESULTS_FILE, append_result
from harness.runtime.watchdog import WorkerWatchdog, worker_pid, worker_popen
from harness.spec.matrix import Selection
from harness.store.case_result import CaseResult

if TYPE_CHECKING:   # the controller imports this module before its workers start: nothing that imports torch
    from harness.case.work import RunOptions
    from harness.spec.cases import Case
    from harness.spec.matrix import Matrix

RUN_REFUSED = pytest.StashKey[bool]()   # set by harness.runtime.run_start when the run did not start: no case may run


# what CaseScheduling takes from pytest-xdist beyond its public hooks: private names of its loadgroup scheduler
# (and of the worker controller) that it reads, overrides or calls, with their parameters
XDIST_METHODS = {'schedule': ('self',), 'remove_node': ('self', 'node'), '_reschedule': ('self', 'node')}
XDIST_STATE = ('workqueue', 'assigned_work', 'registered_collections', 'config')   # set in __init__
XDIST_HOOKS = ('pytest_xdist_make_scheduler', 'pytest_handlecrashitem', 'pytest_configure_node')
WRITTEN_AGAINST = 'pytest-xdist 3.5 to 3.8 with pytest < 9.2'


def xdist_problem() -> str | None:
    """Why the installed pytest-xdist (with the installed pytest) is not one :class:`CaseScheduling` was written
    against, as one line naming the private name that moved; None when every name it relies on is there. The
    scheduler subclasses xdist's private loadgroup scheduler: this is its one fence (tests/test_isolation.py,
    and the plugin before a run starts)."""
    problem = _missing_private_name()
    if problem is None:
        return None
    versions = f'pytest-xdist {metadata.version("pytest-xdist")}, pytest {pytest.__version__}'
    return (f'{versions}: {problem}; harness.runtime.isolation subclasses xdist\'s private loadgroup scheduler and was '
            f'written against {WRITTEN_AGAINST} (pyproject.toml pins them)')


def _missing_private_name() -> str | None:
    import xdist.newhooks
    from _pytest.nodes import Node
    from xdist.workermanage import WorkerController
    for name, parameters in XDIST_METHODS.items():
        method = getattr(LoadGroupScheduling, name, None)
        if method is None or tuple(inspect.signature(method).parameters) != parameters:
            return f'LoadGroupScheduling.{name}({", ".join(parameters[1:])}) is gone or takes other parameters'
    if not isinstance(getattr(LoadGroupScheduling, 'nodes', None), property):
        return 'LoadGroupScheduling.nodes is no longer a property'
    setup = ''.join(inspect.getsource(cls.__init__) for cls in LoadGroupScheduling.__mro__[:-1]
                    if '__init__' in vars(cls))
    missing = [name for name in XDIST_STATE if f'self.{name}' not in setup]
    if missing:
        return f'LoadGroupScheduling no longer keeps {", ".join(missing)}'
    if not callable(getattr(WorkerController, 'shutdown', None)) or \
            not isinstance(getattr(WorkerController, 'shutting_down', None), property):
        return 'WorkerController.shutdown() or its shutting_down property is gone'
    hooks = [name for name in XDIST_HOOKS if not hasattr(xdist.newhooks, name)]
    if hooks:
        return f'xdist no longer has the hooks {", ".join(hooks)}'
    return group_suffix_problem(Node)


def group_suffix_problem(node_class: type) -> str | None:
    """Why xdist's ``--dist loadgroup`` could not name a case's group in its node id: xdist 3.8 writes it into
    ``item._nodeid``, which pytest 9.2 no longer reads (it keeps node ids in ``Node._id``)."""
    if '_nodeid' not in inspect.getsource(node_class.nodeid.fget):
        return ("pytest's node ids no longer come from item._nodeid, where xdist's --dist loadgroup writes a "
                'case\'s group: every case would be a group of its own')
    return None


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

    And it hands out no case at all when the run was refused before its start (:mod:`harness.runtime.run_start`).
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
    workers use. Records that this run wrote before (from the offset the results file had when it started,
    where it is still that file: ``--resume`` keeps older ones; a re-run moves them aside) are left alone: the
    worker may have recorded the case before it died. A worker that died past its case's deadline was ended by a
    watchdog: the reason says ``timeout:``.
    """

    def __init__(self, out_dir: Path, rootpath: Path, options_for: Callable[[Matrix], RunOptions],
                 watchdog: WorkerWatchdog, selection: Selection):
        self.out_dir = out_dir
        self.rootpath = rootpath
        self.selection = selection
        self.options_for = options_for
        self.watchdog = watchdog
        results = out_dir / RESULTS_FILE
        # where this run's records start, in the file there now: a run that moves it aside later (a re-run)
        # writes a new file, whose records are all this run's
        self.results_start = (results.stat().st_ino, results.stat().st_size) if results.exists() else None

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport) -> None:
        matrix, case = self._case_of(crashitem)
        record = self._record_of_this_run(matrix.name, case.case_id)
        ended = _worker_end(report.node)   # waits for the worker to exit: a dump it wrote is whole
        timeout = self.watchdog.timeout_reason(crashitem, worker_pid(report.node))
        if record is None:
            reason = timeout or f'crash: the worker process died while running this case ({ended})'
            result = error_result(case, matrix, self.options_for(matrix), reason, self.watchdog.elapsed(crashitem))
            append_result(self.out_dir, result)
            record = {'status': result.status, 'reason': result.reason}
        report.longrepr = f"{record['status']}: {record['reason']}"   # what the terminal shows for the case

    def _case_of(self, nodeid: str) -> tuple[Matrix, Case]:
        """The case of a node id such as ``vit.yaml::<case id>@<group>`` (the group under ``--dist loadgroup``)."""
        from harness.spec.cases import expand
        from harness.spec.matrix import load_matrix
        file = nodeid.split('::', 1)[0]
        matrix = load_matrix(self.rootpath / file, selection=self.selection)   # validated by the workers already
        for case in expand(matrix):
            if nodeid in (f'{file}::{case.case_id}', f'{file}::{case.case_id}@{case.group}'):
                return matrix, case
        raise LookupError(f'{nodeid}: no such case in {self.rootpath / file}')

    def _record_of_this_run(self, matrix_name: str, case_id: str) -> dict | None:
        results = self.out_dir / RESULTS_FILE
        if not results.exists():
            return None
        with open(results) as f:
            inode = os.fstat(f.fileno()).st_ino
            f.seek(self.results_start[1] if self.results_start and self.results_start[0] == inode else 0)
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
    popen = worker_popen(node)
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


def error_result(case: Case, matrix: Matrix, options: RunOptions, reason: str, duration_s: float) -> CaseResult:
    """The record of a case the harness could not finish (crash, timeout)."""
    from harness.case.runner import finished, new_result
    result = new_result(case, matrix, options)
    result.status, result.reason = 'error', reason
    return finished(result, duration_s)
