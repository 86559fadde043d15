"""Ctrl-C and SIGTERM stop a run alike: the finished cases are kept, the report covers them, a line says how to
finish the run with ``--resume``, and the exit code says which signal it was (128 + its number: 130, 143).

SIGTERM is how CI cancels a job, ``timeout`` ends a command and ``docker stop`` a container. ``timeout`` signals
the whole process group; ``docker stop`` and ``kill PID`` signal one process. So both sides take it as Ctrl-C:
the controller (:class:`Interruption`) passes it on to its workers, and a worker (:func:`stop_on_sigterm`)
stops its case as Ctrl-C would, instead of dying mid-case: its cleanup and pytest's teardown run, and a dead
worker is never mistaken for a crash of its case. A process that meets the signal twice (its group's, then the
controller's) acts on the first.
"""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator

import pytest

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def signal_exit_code(signum: int) -> int:
    """The shell's convention for a command ended by a signal: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + signum


STOPPED_EXIT_CODES = tuple(signal_exit_code(s) for s in STOPPING_SIGNALS)


class Interruption:
    """Registered as a pytest plugin in the xdist controller: knows its workers' processes. ``signum`` is the
    signal that stopped the cases, or None."""

    def __init__(self):
        self.signum: int | None = None
        self._running = False
        self._workers: dict[object, int] = {}   # xdist node -> its process id

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodeready(self, node) -> None:
        popen = getattr(getattr(node.gateway, '_io', None), 'popen', None)   # execnet's popen gateways keep it
        if popen is not None:
            self._workers[node] = popen.pid

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        self._workers.pop(node, None)

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """SIGINT and SIGTERM handled for the body: around the cases and the report written after them."""
        previous = {s: signal.signal(s, self._on_signal) for s in STOPPING_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def cases_running(self) -> Iterator[None]:
        """While the cases run, the first signal stops them: KeyboardInterrupt, which pytest and xdist handle."""
        self._running = True
        try:
            yield
        finally:
            self._running = False

    def _on_signal(self, signum: int, frame) -> None:
        if self._running and self.signum is None:
            self.signum = signum
            if signum == signal.SIGTERM:
                self._pass_on(signum)
            raise KeyboardInterrupt
        if signum == signal.SIGINT:   # another Ctrl-C, or one outside the cases: as Python's default
            raise KeyboardInterrupt
        # a SIGTERM after the first (the group's and the one passed on), or while the report is written: ignored

    def _pass_on(self, signum: int) -> None:
        for pid in list(self._workers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


def stop_on_sigterm() -> None:
    """In a worker: the first SIGTERM stops the case as Ctrl-C does; later ones are the same request."""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
