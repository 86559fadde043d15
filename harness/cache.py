"""Where the harness keeps what it reuses across runs: synthesized checkpoints, timm releases, the
machine-wide timing lock. Imports nothing heavy: the command line asks for it before importing torch."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    root = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(root) / 'timm-harness'
