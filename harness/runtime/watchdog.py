"""``--case-timeout``: a case still running past its deadline is ended, whatever it is stuck in.

Three watchdogs, each for what the one before cannot end:

1. a Python thread in the worker (:func:`deadline`), at the deadline: it records the case with the frames it
   was stuck in and ends the worker. It needs the GIL, so a native call that holds the GIL (measured: a 3 s
   timer fired only after the 12.1 s call returned) or a stopped worker keeps it from running;
2. faulthandler's C thread in the same worker, :data:`GRACE_S` later: it needs no GIL; it writes every
   thread's Python frames to a dump file (:func:`dump_path`) and ends the worker (exit status 1);
3. the xdist controller (:class:`WorkerWatchdog`), another :data:`GRACE_S` later: it kills (SIGKILL) a worker
   that is still running the case, which ends a stopped (SIGSTOP) worker too.

When the worker died without a record of its case, the controller records the case as ``error`` with a
``timeout:`` reason saying which watchdog ended it (:meth:`WorkerWatchdog.timeout_reason`), and xdist starts a
replacement worker for the cases left, as after a crash (:mod:`harness.runtime.isolation`).
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Callable, Iterator

import pytest

TIMEOUT_EXIT_STATUS = 70   # what a worker ended by its Python watchdog exits with (EX_SOFTWARE)
STACK_FRAMES = 4           # innermost frames of a hung case that its timeout record shows
GRACE_S = 2.0              # from one watchdog to the next: the Python one records and exits well within it
POLL_S = 0.25              # how often the controller looks at the running cases' clocks


def timeout_reason(seconds: float, how: str) -> str:
    return f'timeout: the case ran longer than {seconds:g} s; {how}'


# --- in the worker ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def deadline(seconds: float, on_timeout: Callable[[str], None]) -> Iterator[None]:
    """Run the body under watchdogs 1 and 2: past ``seconds``, call ``on_timeout`` with the body's innermost
    stack frames, then end the process; past ``seconds + GRACE_S``, faulthandler ends it. 0 means no deadline.

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
    _arm_faulthandler(seconds + GRACE_S, body)
    try:
        yield
    finally:
        with lock:
            finished.set()
        faulthandler.cancel_dump_traceback_later()
        watchdog.cancel()


def dump_path(pid: int) -> Path:
    """Where faulthandler writes the frames of worker ``pid`` when it ends it (read by the controller)."""
    return Path(tempfile.gettempdir()) / f'harness-watchdog-{pid}.txt'


_dump: IO[str] | None = None   # this worker's dump file, open for its whole life


def _arm_faulthandler(seconds: float, body: int) -> None:
    """Watchdog 2. The dump file starts with the case's thread id, so that the controller can pick its frames
    out of every thread's."""
    global _dump
    if _dump is None:
        path = dump_path(os.getpid())
        _dump = open(path, 'w')
        atexit.register(path.unlink, missing_ok=True)   # a worker that ends normally leaves nothing behind
    _dump.seek(0)
    _dump.truncate()
    _dump.write(f'case thread {body:#x}\n')
    _dump.flush()
    faulthandler.dump_traceback_later(seconds, exit=True, file=_dump)


def dumped_frames(pid: int, limit: int = STACK_FRAMES) -> str | None:
    """The case thread's innermost frames (most recent first) that faulthandler wrote when it ended worker
    ``pid``, or None when it wrote nothing. The file is removed."""
    path = dump_path(pid)
    try:
        header, _, dump = path.read_text(errors='replace').partition('\n')
    except OSError:
        return None
    path.unlink(missing_ok=True)
    if not dump.strip():
        return None
    ident, frames, current = int(header.rpartition(' ')[2], 16), [], None
    for line in dump.splitlines():   # 'Timeout (0:00:05)!', then per thread: 'Thread 0x...' and its frames
        thread = re.search(r'[Tt]hread (0x[0-9a-f]+)', line)   # 'Current thread 0x...' too
        if thread:
            current = int(thread.group(1), 16)
        elif current == ident and line.startswith('  File'):
            frames.append(line)
    return '\n'.join(frames[:limit]) if frames else None


# --- in the xdist controller ------------------------------------------------------------------------------------
class WorkerWatchdog:
    """Watchdog 3, registered in the controller: the clock of each running case, and a thread that kills the
    worker of a case still running ``2 * GRACE_S`` past its deadline. ``seconds`` 0: clocks only, no killing.

    The controller hears a case start (``logstart``) without the worker's name, which comes with the setup
    report; the worker's pid is execnet's child process.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started: dict[str, float] = {}   # node id -> monotonic time its case started
        self.workers: dict[str, int] = {}     # node id -> pid of the worker running it
        self.killed: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def elapsed(self, nodeid: str) -> float:
        with self.lock:
            return time.monotonic() - self.started.get(nodeid, time.monotonic())

    def pytest_sessionstart(self) -> None:
        if self.seconds:
            threading.Thread(target=self._watch, name='harness-watchdog', daemon=True).start()

    def pytest_sessionfinish(self) -> None:
        self.stop.set()

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        with self.lock:
            self.started[nodeid] = time.monotonic()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        pid = worker_pid(getattr(report, 'node', None))
        if report.when == 'setup' and pid is not None:
            with self.lock:
                self.workers[report.nodeid] = pid

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        with self.lock:
            self.workers.pop(nodeid, None)

    def timeout_reason(self, nodeid: str, pid: int | None) -> str | None:
        """Why the worker that died running ``nodeid`` ended, when it ran past its deadline; else None."""
        frames = dumped_frames(pid) if pid is not None else None
        with self.lock:
            self.workers.pop(nodeid, None)
            killed = nodeid in self.killed
        if killed:
            return timeout_reason(self.seconds, 'its worker was stopped or stuck where no watchdog of its own '
                                                'could end it, so the harness killed it (SIGKILL)')
        if frames is not None:
            return timeout_reason(self.seconds, 'a native call held the GIL, so faulthandler ended its worker; '
                                                f'it was at (most recent call first)\n{frames}')
        if self.seconds and self.elapsed(nodeid) >= self.seconds:
            return timeout_reason(self.seconds, 'its worker ended without recording it')
        return None

    def _watch(self) -> None:
        while not self.stop.wait(POLL_S):
            now = time.monotonic()
            with self.lock:
                late = [(nodeid, pid) for nodeid, pid in self.workers.items() if nodeid not in self.killed
                        and now - self.started.get(nodeid, now) > self.seconds + 2 * GRACE_S]
                self.killed.update(nodeid for nodeid, _ in late)
            for _, pid in late:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def worker_pid(node) -> int | None:
    """The pid of an xdist worker started by execnet's popen gateway (the only kind ``harness run`` starts)."""
    popen = worker_popen(node)
    return popen.pid if popen is not None else None


def worker_popen(node):
    return getattr(getattr(getattr(node, 'gateway', None), '_io', None), 'popen', None)
