"""``harness repro``: a failed case as a standalone script a timm maintainer can run with torch and timm only.

The script builds the case's source checkpoint (synthesized, or the user's file), writes it in the origin's
layout, builds the case's path as the harness does, and runs the checks that failed with the harness's own
oracles carried in (:mod:`.inline`); its exit code is what ``git bisect run`` expects. Made from the case's
record and its run folder (:mod:`.sources`, :mod:`.history`, :mod:`.case`), per check by snippets
(:mod:`.snippets`; each family's own in :mod:`.oracles`) over the functions scripts carry (:mod:`.steps`,
each origin's compact writer in :mod:`harness.checkpoints.origins`), assembled by :mod:`.script`.

This module imports nothing heavy: reports call :func:`repro_command`.
"""
from __future__ import annotations

import shlex
from pathlib import Path

REPRODUCIBLE = ('failed', 'xfailed')   # the statuses harness repro writes a script for


def repro_command(run_dir: Path | str, case_id: str) -> str:
    """The command that writes the reproducer of a failed or xfailed case of the run in ``run_dir``."""
    return shlex.join(['harness', 'repro', str(run_dir), case_id])
