"""A run owns its folder: one harness command at a time writes a run folder (run.json, results.jsonl, reports).

Two runs into one ``--out`` would mix their records: the second moves the first one's results aside while the
first keeps appending, and each one's report counts the other's cases. So the command holds an exclusive
``flock`` on ``<out>/.locks/folder.lock`` from before it changes anything in the folder until it has written its
report, and a second command is refused at once, told who holds the folder (the holder file beside the lock, as
for the device's timing lock: :mod:`harness.runtime.device_lock`). The kernel releases a ``flock`` when its
process dies, even by ``kill -9``: a dead run never keeps its folder.

A run that takes the folder over removes the reports there (:func:`remove_reports`): they describe results it
moves aside or adds to, and it writes its own when it ends. A run killed before then leaves no report, rather
than one of another run beside its results.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
from pathlib import Path
from typing import Iterator

from harness.runtime.device_lock import RUN_LOCKS, Holder, read_holder, write_holder

FOLDER_LOCK = 'folder.lock'       # in the folder's RUN_LOCKS
FOLDER_HOLDER = 'folder.holder'   # who holds it: a HolderRecord, as JSON


class FolderInUse(Exception):
    """Another process holds the folder; ``str()`` names it (pid, command line, since when)."""


@contextlib.contextmanager
def owning(out_dir: Path, holder: Holder) -> Iterator[None]:
    """Hold ``out_dir`` for the body, or raise :class:`FolderInUse` without waiting."""
    lock_dir = out_dir / RUN_LOCKS
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / FOLDER_LOCK, 'a') as lock:   # not inherited by child processes (PEP 446)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = read_holder(lock_dir / FOLDER_HOLDER)
            raise FolderInUse(f'in use by {current.describe() if current else "another process"}') from None
        write_holder(lock_dir / FOLDER_HOLDER, holder, out_dir)
        yield


def remove_reports(out_dir: Path) -> None:
    """Remove the folder's report files (report.md, report.html, results.csv, summary.csv, compare.md and
    compare.json) before a run or a merge changes the results they describe."""
    from harness.analysis.compare import CompareFiles  # both import pandas: only once a run has started
    from harness.analysis.report import ReportFiles
    for files in (ReportFiles.in_folder(out_dir), CompareFiles.in_folder(out_dir)):
        for path in dataclasses.astuple(files):
            path.unlink(missing_ok=True)
