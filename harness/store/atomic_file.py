"""Files written whole or not at all: a reader never meets half a file, and a crash or a signal mid-write leaves
the previous version (or none), never a torn one."""
from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` in one step
    (``os.replace``: atomic on POSIX within one filesystem); the temporary file never outlives the call."""
    partial = path.with_name(f'.{path.name}.{os.getpid()}.partial')
    try:
        if isinstance(data, bytes):
            partial.write_bytes(data)
        else:
            partial.write_text(data)
        os.replace(partial, path)
    except BaseException:   # KeyboardInterrupt too: no .partial file is left behind
        partial.unlink(missing_ok=True)
        raise
    return path
