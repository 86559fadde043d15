"""results.jsonl: one JSON line per finished case (:class:`harness.store.case_result.CaseResult`), the record every
later stage (report, resume, compare) reads; and :func:`load`, the file as a pandas DataFrame.

Lines are appended under an exclusive file lock as each case finishes, so a crash loses nothing and
xdist workers never interleave partial lines.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Iterator

from harness.spec.vocabulary import PATHS, as_hw
from harness.store import schema
from harness.store.case_result import HELD, CaseResult, record_problem

if TYPE_CHECKING:   # pandas is imported by load() alone: the pytest controller imports this module
    import pandas as pd

RESULTS_FILE = 'results.jsonl'

_logger = logging.getLogger(__name__)


def append_result(out_dir: Path, result: CaseResult) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / RESULTS_FILE, 'ab+', buffering=0) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            _append_whole(f, _line_start(f) + result.to_json().encode() + b'\n')
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _append_whole(f: BinaryIO, data: bytes) -> None:
    """``data`` appended whole or not at all: a write refused part way (a full disk) is cut off again and
    raised, so the file never ends in part of a record."""
    size = f.seek(0, os.SEEK_END)
    left = memoryview(data)
    try:
        while left:
            left = left[f.write(left):]
    except OSError:
        f.truncate(size)
        raise


def _line_start(f: BinaryIO) -> bytes:
    """What must come before a new record so that it starts a line of its own.

    A last line without its newline was cut short by a crash: it is cut off, since leaving it above the new
    record would put garbage in the middle of the file, which readers refuse. A whole JSON record that only
    lacks its newline (an edited file) is kept and given one.
    """
    size = f.seek(0, os.SEEK_END)
    start = _last_line_start(f, size)
    f.seek(start)
    tail = f.read()
    if not tail or tail.endswith(b'\n'):
        return b''
    if _parses(tail):
        return b'\n'
    f.truncate(start)
    return b''


def _last_line_start(f: BinaryIO, size: int, block: int = 1 << 16) -> int:
    """Offset just after the last newline before the file's final byte (0 if there is none)."""
    end = max(size - 1, 0)
    while end > 0:
        begin = max(end - block, 0)
        f.seek(begin)
        newline = f.read(end - begin).rfind(b'\n')
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:   # JSONDecodeError, UnicodeDecodeError
        return False
    return True


class ResultsFileError(ValueError):
    """A results file that cannot be trusted (garbage before its last line); ``str()`` is ``<file>:<line>: ...``."""


def read_results(path: Path, whole: bool = False) -> list[dict[str, Any]]:
    """All records of a results file; the last record of a case wins (a resumed run may repeat one). ``whole``:
    a last line cut short is refused too, as is a file without a record (:func:`read_run_results`)."""
    by_case: dict[tuple[str, str], dict[str, Any]] = {}
    for record in _records(path, whole):
        by_case[record.get('matrix', ''), record['case_id']] = record
    if whole and not by_case:
        raise ResultsFileError(f'{path}: holds no record; expected the results of a harness run, one JSON record per '
                               f'line')
    return list(by_case.values())


def read_run_results(path: Path) -> list[dict[str, Any]]:
    """The records of a run that a command judges or joins (compare, merge): a run killed mid-write (a last line
    cut short) or a file holding no record (empty, garbage) is not a run to pass a CI gate on."""
    return read_results(path, whole=True)


INT_FIELDS = ('patch_size', 'batch_size', 'batch_size_used', 'timing_repeats', 'accuracy_images', 'flops_per_image',
              'cpu_cores')


def load(path: str | Path) -> pd.DataFrame:
    """A results file as a pandas DataFrame: one row per case (the last record of a case wins), CaseResult's
    fields as columns in their order (then any fields newer records add), rows sorted by model, origin, size,
    patch, window and path. Records of older harnesses read as if written today: fields they lack are their
    defaults, renamed fields are under today's names.

        >>> frame = harness.results.load('reports/smoke/results.jsonl')
        >>> frame[frame.status == 'passed'].groupby(['model', 'path'])['images_per_s'].median()
    """
    import pandas as pd
    defaults = _defaults()
    records = sorted(({**defaults, **r} for r in read_results(Path(path))), key=_sort_key)
    extra = sorted({k for r in records for k in r} - set(defaults))
    frame = pd.DataFrame(records, columns=[*defaults, *extra])
    for column in INT_FIELDS:
        frame[column] = pd.to_numeric(frame[column], errors='coerce').astype('Int64')
    return frame


def _defaults() -> dict[str, Any]:
    """CaseResult's defaults, so older records that lack a field read as if they had it; identity fields: None."""
    out = {}
    for f in dataclasses.fields(CaseResult):
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        out[f.name] = factory() if factory else (None if f.default is dataclasses.MISSING else f.default)
    return out


def unsupported_why(reason: Any) -> str:
    """An unsupported case's reason without the checks that ran and held: what cases unsupported for the same
    cause share."""
    return ' '.join(str(reason).split(HELD)[0].split())


@dataclass(frozen=True)
class UnsupportedGroup:
    why: str                  # the reason its cases share (:func:`unsupported_why`)
    case_ids: list[str]
    paths: list[str]          # the build paths among them, in the matrix's order


def unsupported_groups(frame: pd.DataFrame) -> list[UnsupportedGroup]:
    """The unsupported cases of a :func:`load` frame grouped by reason, the largest group first."""
    rows = frame[frame['status'] == 'unsupported']
    groups = [UnsupportedGroup(str(why), list(cases['case_id']), sorted(set(cases['path']), key=path_rank))
              for why, cases in rows.groupby(rows['reason'].map(unsupported_why), sort=False)]
    return sorted(groups, key=lambda g: -len(g.case_ids))


def path_rank(path: Any) -> tuple[int, str]:
    """Build paths in the matrix's order (create, set_input_size, dynamic), then any other by name."""
    return (PATHS.index(path), '') if path in PATHS else (len(PATHS), str(path))


def window_key(window: Any) -> tuple[int, int]:
    """A window (an int, [H, W] or None) as a sortable (h, w)."""
    return as_hw(window) or (0, 0)


def _sort_key(record: dict[str, Any]) -> tuple:
    return (str(record['model'] or ''), str(record['origin'] or ''), list(record['img_size'] or []),
            record['patch_size'] or 0, window_key(record['window_size']), path_rank(record['path']),
            str(record['case_id']))


def finished_case_ids(path: Path, matrix_name: str) -> set[str]:
    """Cases of a matrix that reached a verdict; `error` cases are retried by --resume."""
    if not path.exists():
        return set()
    return {r['case_id'] for r in read_results(path) if r.get('status') != 'error' and r.get('matrix') == matrix_name}


def _records(path: Path, whole: bool = False) -> Iterator[dict[str, Any]]:
    """The records in file order. A last line that is not JSON was cut short by a crash: skipped, with a warning
    (unless ``whole``). Anything else that is not a record, and a record with a field CaseResult cannot hold
    (:func:`record_problem`), raises :class:`ResultsFileError` naming ``file:line``."""
    lines = [(number, line) for number, line in enumerate(path.read_bytes().split(b'\n'), 1) if line.strip()]
    for number, line in lines:
        record, problem = _parsed_record(line)
        if problem is None:
            record, wrong = _upgraded(record)
            if wrong:
                raise ResultsFileError(f'{path}:{number}: {wrong}')
            yield record
        elif number == lines[-1][0] and not whole:
            _logger.warning('%s:%d: last line is not a whole record (%s), as when a crash cuts a write short; '
                            'skipped it', path, number, problem)
        else:
            raise ResultsFileError(f'{path}:{number}: {problem}; expected one JSON record per line, as '
                                   f'harness run writes')


def _upgraded(record: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The record read as today's (:func:`harness.store.schema.upgrade`), and the first field CaseResult could not hold
    (:func:`record_problem`), if any."""
    try:
        record = schema.upgrade(schema.RECORD, record)
    except schema.SchemaError as e:
        return record, str(e)
    return record, record_problem(record)


def _parsed_record(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the record as written; None), or (None, why the line is not one)."""
    try:
        record = json.loads(line)
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
        return None, f'not JSON ({e})'
    if not isinstance(record, dict) or not isinstance(record.get('case_id'), str):
        return None, 'a JSON value without a "case_id"'
    return record, None


def set_aside(out_dir: Path, started: datetime.datetime | None) -> Path | None:
    """Move the previous run's results.jsonl to ``results.<its start time>.jsonl`` so that the run about to
    start begins clean, and return the new path (None when there was nothing to move). ``started`` comes from
    the previous run.json; without one, the file's last modification stands in for it."""
    results = out_dir / RESULTS_FILE
    if not results.exists():
        return None
    when = started or datetime.datetime.fromtimestamp(results.stat().st_mtime, datetime.timezone.utc)
    stamp = when.astimezone(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')   # no ':' in file names
    target = out_dir / f'results.{stamp}.jsonl'
    suffix = 1
    while target.exists():   # two runs started in the same second
        suffix += 1
        target = out_dir / f'results.{stamp}-{suffix}.jsonl'
    results.rename(target)
    return target
