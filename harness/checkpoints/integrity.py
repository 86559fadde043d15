"""Checksums of the checkpoint cache: written beside each entry's files, verified before the entry is used.

A cache entry read back with other bytes than were written (a disk or copy error, a crash on a filesystem whose
rename is not atomic, an edit by hand) would be a checkpoint and a reference that no longer match: every case of
it would fail ``reload`` and ``fidelity`` against timm for the harness's own fault. So each entry's folder holds
:data:`CHECKSUMS_FILE`, the sha256 of each of its files, written last before the folder is renamed into place;
an entry whose files do not match it (or that lacks it) is rebuilt by :mod:`harness.checkpoints.store`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import BinaryIO

from harness.store import schema

CHECKSUMS_FILE = 'sha256.json'
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def copy_hashing(source: Path, target: Path) -> str:
    """Copy ``source`` to ``target`` in one read, and the sha256 of the bytes written: the digest names what was
    copied even when ``source`` changes meanwhile."""
    digest = hashlib.sha256()
    with open(source, 'rb') as f, open(target, 'wb') as out:
        _pump(f, out, digest)
    return digest.hexdigest()


def _pump(f: BinaryIO, out: BinaryIO, digest) -> None:
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
        out.write(chunk)


def write_checksums(folder: Path) -> None:
    """The sha256 of every file in ``folder``, written to its :data:`CHECKSUMS_FILE`."""
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != CHECKSUMS_FILE)
    digests = {name: sha256_of(folder / name) for name in files}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(schema.stamped(schema.CHECKSUMS, {'files': digests}), indent=1))


def checksum_problem(folder: Path) -> str | None:
    """Why the files of ``folder`` are not those its checksums were written for, or None when they are."""
    try:
        expected = schema.upgrade(schema.CHECKSUMS, json.loads((folder / CHECKSUMS_FILE).read_text()))['files']
    except FileNotFoundError:
        return f'has no {CHECKSUMS_FILE}'
    except (OSError, ValueError) as e:
        return f'has an unreadable {CHECKSUMS_FILE} ({e})'
    if not isinstance(expected, dict) or not expected:
        return f'has an unreadable {CHECKSUMS_FILE} (expected {{file: sha256}})'
    for name, digest in expected.items():
        path = folder / str(name)
        if not path.is_file():
            return f'lacks its file {name}'
        actual = sha256_of(path)
        if actual != digest:
            return f'holds a {name} whose sha256 is {actual[:12]}..., not the {str(digest)[:12]}... it was written with'
    return None
