"""What a repro script is made from: a failed case's record, and what its run folder says about the case.

The record (results.jsonl) names the case; the run's ``run.json`` names the matrix it ran, whose tolerances
judged it and whose ``{file: PATH}`` origin is the user's checkpoint. The matrix is used only when it is still
the file the run read (its sha256 matches run.json); otherwise the script is made from the record alone, with
the default tolerances, and says so. The releases it failed and passed on come from :mod:`harness.repro.history`.
"""
from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.repro import REPRODUCIBLE
from harness.repro.history import Sighting, sightings
from harness.results import RESULTS_FILE, read_results
from harness.store.run_record import RunRecord, read_run_record


class ReproError(ValueError):
    """The case cannot be reproduced from what the run folder holds; ``str()`` is the one line to show."""


@dataclass
class CaseSource:
    record: dict[str, Any]
    run_dir: Path
    run: RunRecord | None
    matrix_path: Path | None            # the matrix the run read, when it is still that file
    matrix_problem: str | None          # why it is not there otherwise
    history: list[Sighting] = field(default_factory=list)


# the MATRIX argument of a recorded command line (``harness run MATRIX ...``), None where it names none: the
# CLI, which owns that grammar, passes its reader (:func:`harness.cli.recorded_matrix`)
MatrixArgument = Callable[[list[str]], 'Path | None']


def find_case(run_path: Path, case_id: str, matrix_argument: MatrixArgument) -> CaseSource:
    """The failed or xfailed case ``case_id`` of the run at ``run_path`` (a run folder or its results.jsonl);
    ``matrix_argument`` reads the matrix off the command line run.json recorded."""
    results = run_path / RESULTS_FILE if run_path.is_dir() else run_path
    if not results.is_file():
        raise ReproError(f'{run_path}: no {RESULTS_FILE} there; expected a run folder or a results.jsonl written '
                         f'by harness run')
    records = [r for r in read_results(results) if r['case_id'] == case_id]
    if not records:
        ids = sorted({r['case_id'] for r in read_results(results)})
        close = difflib.get_close_matches(case_id, ids, n=3, cutoff=0.6)
        hint = f'; did you mean {", ".join(close)}?' if close else f' (it holds {len(ids)} cases)'
        raise ReproError(f'{results}: no case {case_id!r}{hint}')
    if len(records) > 1:
        raise ReproError(f'{results}: case {case_id!r} is in several matrices '
                         f'({", ".join(r.get("matrix", "?") for r in records)}); pass one matrix\'s results')
    record = records[0]
    if record['status'] not in REPRODUCIBLE:
        raise ReproError(f'{case_id} is {record["status"]} in {results}: harness repro writes a reproducer for '
                         f'failed and xfailed cases only')
    run = read_run_record(results.parent)
    matrix_path, problem = _matrix(run, matrix_argument)
    return CaseSource(record, results.parent, run, matrix_path, problem, sightings(results.parent, record))


def _matrix(run: RunRecord | None, matrix_argument: MatrixArgument) -> tuple[Path | None, str | None]:
    """The matrix file the run read if it is still there unchanged, else why not."""
    if run is None:
        return None, 'the run folder has no run.json to name its matrix'
    path = matrix_argument(run.argv)
    if path is None:
        return None, 'run.json names no matrix'
    if not path.is_file():
        return None, f"{path}, the run's matrix, is not there"
    if hashlib.sha256(path.read_bytes()).hexdigest() != run.matrix_sha256:
        return None, f"{path}, the run's matrix, changed since the run"
    return path, None
