"""Device locks: timing never overlaps the run's own checks, nor another run's timing on the same device.

Two locks with two scopes, so that runs side by side do not queue behind each other's checks:

- **per run**, in the run's folder: checks hold it shared, timing exclusive. Under ``-n`` a run's timing
  measures a device its own workers leave alone; other runs are not bound by it.
- **per machine**, in ``<cache>/locks/``: timing holds it exclusive, so two runs never time on one device at
  once. Its holder is written beside it, and a run that has to wait says on screen who holds it.

Timing takes the machine-wide lock first: while it waits for another run, its own run's checks go on.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from harness.store import schema
from harness.store.atomic_file import write_atomically

if TYPE_CHECKING:   # imported by the plugin in the xdist controller, which must not wait for torch
    import torch

RUN_LOCKS = '.locks'   # inside the run's folder


@dataclass(frozen=True)
class Holder:
    """A run as other runs waiting for the device are told about it."""
    pid: int        # the process the user started (`harness run`), not the xdist worker that holds the lock
    command: str    # its command line

    @classmethod
    def this_process(cls) -> Holder:
        return cls(os.getpid(), shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))


@dataclass(frozen=True)
class HolderRecord:
    """What the machine-wide timing lock's holder file says."""
    pid: int
    command: str
    out_dir: str
    since: str      # ISO time, with the local offset

    def describe(self) -> str:
        since = datetime.datetime.fromisoformat(self.since).strftime('%H:%M:%S')
        return f'pid {self.pid} ({self.command}, out {self.out_dir}) since {since}'


@contextlib.contextmanager
def checks_lock(out_dir: Path, device: torch.device) -> Iterator[None]:
    """Held around a case's checks: shared with the run's other checks, never with its timing."""
    with _run_lock(out_dir / RUN_LOCKS, device, exclusive=False):
        yield


@contextlib.contextmanager
def timing_lock(out_dir: Path, device: torch.device, cache_dir: Path, holder: Holder,
                say: Callable[[str], None]) -> Iterator[None]:
    """Held around a case's timing: the device to itself among the run's workers and among all runs."""
    with _machine_timing_lock(cache_dir / 'locks', device, holder, out_dir, say), \
            _run_lock(out_dir / RUN_LOCKS, device, exclusive=True):
        yield


@contextlib.contextmanager
def _run_lock(lock_dir: Path, device: torch.device, exclusive: bool) -> Iterator[None]:
    """A reader-writer lock that does not starve the writer.

    File locks do not prefer writers, so a steady stream of checks could starve timing: a gate lock fixes that.
    Timing holds the gate while it waits, and checks pass through the gate before taking their shared lock, so
    none start while timing waits.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = _file_name(device)
    with open(lock_dir / f'{name}.gate', 'a') as gate, open(lock_dir / f'{name}.lock', 'a') as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)


@contextlib.contextmanager
def _machine_timing_lock(lock_dir: Path, device: torch.device, holder: Holder, out_dir: Path,
                         say: Callable[[str], None]) -> Iterator[None]:
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = _file_name(device)
    holder_file = lock_dir / f'{name}.timing.holder'
    with open(lock_dir / f'{name}.timing.lock', 'a') as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = read_holder(holder_file)
            if current is None or current.pid != holder.pid:   # the run's own workers take turns silently
                say(f'waiting for the {device} timing lock held by '
                    + (current.describe() if current else 'another process'))
            fcntl.flock(lock, fcntl.LOCK_EX)
        write_holder(holder_file, holder, out_dir)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_holder(path: Path, holder: Holder, out_dir: Path) -> None:
    """Replace the holder file in one step, so a waiting run never reads half of it."""
    since = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    record = HolderRecord(holder.pid, holder.command, str(out_dir), since)
    write_atomically(path, json.dumps(schema.stamped(schema.HOLDER, asdict(record))))


def read_holder(path: Path) -> HolderRecord | None:
    try:
        data = schema.upgrade(schema.HOLDER, json.loads(path.read_text()))
        return HolderRecord(**schema.without_version(schema.HOLDER, data))
    except (OSError, ValueError, TypeError):
        return None


def _file_name(device: torch.device) -> str:
    return str(device).replace(':', '-')
