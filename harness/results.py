"""One JSON line per finished case: the record every later stage (report, resume, compare) reads.

Lines are appended under an exclusive file lock as each case finishes, so a crash loses nothing and
xdist workers never interleave partial lines.
"""
from __future__ import annotations

import dataclasses
import datetime
import fcntl
import functools
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Iterator

from harness import schema
from harness.case.check_registry import REGISTRY
from harness.vocabulary import PATHS

if TYPE_CHECKING:   # pandas is imported by load() alone: the pytest controller imports this module
    import pandas as pd

STATUSES = ('passed', 'failed', 'xfailed', 'xpassed', 'unsupported', 'error', 'resource')
UNEXPECTED = ('failed', 'xpassed', 'error', 'resource')   # statuses that make `harness run` exit 1
# names that may appear in a record's ``failed_checks``, in the order the stages run (harness.case.check_registry)
CHECKS = tuple(REGISTRY)
DTYPES = ('fp32', 'bf16', 'fp16')   # the timing dtypes
PRECISIONS = ('amp', 'cast')        # how a reduced dtype is applied: autocast, or weights and inputs cast to it
STATES = ('fp32', 'bf16', 'fp16', 'frozen', 'train')   # a model's state when resized (harness.states)
DEFAULT_STATE = 'fp32'
RESULTS_FILE = 'results.jsonl'
HELD = '; ran and held: '   # an unsupported case's reason: why, then this, then the checks that ran and held
UNSUPPORTED_PREFIX = 'unsupported: '   # how pytest's skip of an unsupported case starts (plugin, console)

_logger = logging.getLogger(__name__)


@dataclass
class CaseResult:
    # identity of the case
    case_id: str
    matrix: str
    model: str
    origin: str
    img_size: list[int]
    patch_size: int | None
    window_size: int | list[int] | None      # an int (square) or [H, W]
    path: str
    state: str = 'fp32'                      # the state the model was resized in (harness.states)
    model_name: str = ''                                   # the timm name (``model`` is the matrix label)
    model_overrides: dict[str, Any] = field(default_factory=dict)   # constructor overrides of the checkpoint
    family: str = ''                         # the family claiming the model (harness.families); '' in older records
    source_img_size: list[int] | None = None
    source_patch_size: int | None = None
    source_window_size: int | list[int] | None = None   # the first stage's, as window_size
    # outcome
    status: str = 'error'
    reason: str = ''
    failed_checks: list[str] = field(default_factory=list)
    # how it was measured
    timm_version: str = ''
    torch_version: str = ''
    device: str = ''
    device_name: str = ''
    dtype: str = ''
    precision: str = ''                 # amp (autocast) or cast (weights and inputs in the dtype)
    compile: bool | None = None         # timed through torch.compile
    channels_last: bool | None = None   # timed in channels-last memory format
    batch_size: int | None = None       # as configured; batch_size_used says what fitted
    finished_at: str = ''
    duration_s: float | None = None
    # load
    load_error: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    resize_error: str | None = None             # what timm raised while resizing (set_input_size, create's resample)
    # reload: the checkpoint loaded into the exact configuration it was saved from, against its own tensors
    native_max_abs_diff: float | None = None
    native_worst_tensor: str | None = None
    reference_note: str | None = None           # hub, file: the tensors not read back from the file, and why
    # dtype and trainable: what the resize changed of the state the model was in (harness.states)
    dtype_changes: list[str] = field(default_factory=list)       # tensors whose dtype or device moved
    trainable_changes: list[str] = field(default_factory=list)   # requires_grad or training flags that moved
    # shapes
    shape_errors: list[str] = field(default_factory=list)
    # features: feature_info against what forward_intermediates returned at the case's size
    feature_errors: list[str] = field(default_factory=list)
    # finite
    nonfinite_outputs: list[str] = field(default_factory=list)   # outputs holding NaN or Inf
    # noop (set_input_size cases): set_input_size(img_size=<the model's own size>) must change nothing
    noop_max_abs_diff: float | None = None      # its outputs at the own size vs the model's before the call
    noop_changes: list[str] = field(default_factory=list)   # stored configuration it moved, or what it raised
    # fidelity
    fidelity_weights_max_abs_diff: float | None = None
    fidelity_worst_tensor: str | None = None
    fidelity_outputs_max_abs_diff: float | None = None
    # parity (against the `create` path)
    parity_max_abs_diff: float | None = None
    parity_cosine: float | None = None
    parity_note: str | None = None   # why parity is recorded but not judged (a documented difference, ...)
    # what the path's model computed, compact: compared between releases by `harness compare`
    output_fingerprint: dict[str, Any] | None = None
    # drift (target size vs native size)
    drift_cosine: float | None = None
    drift_top1_agreement: float | None = None
    # accuracy on the user's labelled images (--images), for real weights (hub, file) only; None otherwise
    accuracy_images: int | None = None           # how many images
    accuracy_top1_native: float | None = None    # the checkpoint's model at its own size
    accuracy_top1: float | None = None           # the path's model at the target size
    # timing
    time_median_ms: float | None = None
    time_iqr_ms: float | None = None
    time_min_ms: float | None = None
    time_p50_ms: float | None = None
    time_p90_ms: float | None = None
    time_p99_ms: float | None = None
    time_cv: float | None = None                       # standard deviation over mean of the timed passes
    timing_stable: bool | None = None                  # time_cv <= timing_max_cv
    timing_max_cv: float | None = None
    images_per_s: float | None = None
    batch_size_used: int | None = None                 # batch_size, halved until a pass fitted in memory
    peak_memory_mb: float | None = None
    timing_repeats: int | None = None                  # timed passes (at least the matrix's min_repeats)
    timing_budget_s: float | None = None               # seconds the case had for warm-up and timed passes
    timing_median_rse: float | None = None             # median's relative standard error that ends timing early
    time_samples_ms: list[float] | None = None         # every timed pass, in the order they ran
    time_sample_rounds: list[int] | None = None        # the timing round of each (harness ab alternates rounds)
    load_average_start: float | None = None            # the machine's 1-minute load average as timing started
    load_average_end: float | None = None              # and as it ended: above cpu_cores, other work waited
    cpu_cores: int | None = None                       # the cores the worker could run on
    # work: floating-point operations (a multiply-add counts 2) and how close to the device's peak they ran
    flops_per_image: int | None = None                 # one forward pass, counted by torch.utils.flop_counter
    achieved_tflops: float | None = None               # flops_per_image * images_per_s / 1e12
    device_peak_tflops: float | None = None            # datasheet dense peak for the dtype (harness.device_peaks)
    peak_fraction: float | None = None                 # achieved_tflops / device_peak_tflops
    # the record's layout (harness.schema): records of older harnesses are read through its upgrade steps
    schema: int = schema.RECORD.version

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False)


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
    if window is None:
        return 0, 0
    return (window, window) if isinstance(window, int) else (window[0], window[1])


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
    """The record read as today's (:func:`harness.schema.upgrade`), and the first field CaseResult could not hold
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


def record_problem(record: dict[str, Any]) -> str | None:
    """The first field of a record that CaseResult could not hold, as ``<field>: expected <type>, got <value>``;
    None for a sound record. ``status`` must be one of :data:`STATUSES`. Fields a record lacks (older
    harnesses) and fields CaseResult lacks (newer ones) pass."""
    if record.get('status') not in STATUSES:
        got = json.dumps(record['status'])[:80] if 'status' in record else 'none'
        return f'status: expected one of {", ".join(STATUSES)}, got {got}'
    checks = _field_checks()
    for name, value in record.items():
        check = checks.get(name)
        if check is not None and not check[0](value):
            return f'{name}: expected {check[1]}, got {json.dumps(value)[:80]}'
    return None


@functools.cache
def _field_checks() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """CaseResult's fields: name -> (whether a JSON value fits its type, the type as declared)."""
    hints = typing.get_type_hints(CaseResult)
    return {f.name: (_check_of(hints[f.name]), str(f.type)) for f in dataclasses.fields(CaseResult)}


_EXACT_TYPES = {str: (str,), int: (int,), float: (int, float), bool: (bool,), type(None): (type(None),)}


def _check_of(hint: Any) -> Callable[[Any], bool]:
    """A fast test of whether a JSON value fits ``hint`` (an int fits a float; a bool is no number): built once
    per field, since a large results file has thousands of records with lists of hundreds of timings."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return lambda value: True
    if origin in (typing.Union, types.UnionType):   # plain arms by one set lookup, such as float | None
        plain = frozenset(kind for arm in args if arm in _EXACT_TYPES for kind in _EXACT_TYPES[arm])
        others = [_check_of(arm) for arm in args if arm not in _EXACT_TYPES]
        if not others:
            return lambda value: type(value) in plain
        return lambda value: type(value) in plain or any(arm(value) for arm in others)
    if origin is list and args[0] in _EXACT_TYPES:   # a list of timings: its items' types, counted in C
        exact = frozenset(_EXACT_TYPES[args[0]])
        return lambda value: type(value) is list and exact.issuperset(map(type, value))
    if origin is list:
        item = _check_of(args[0])
        return lambda value: type(value) is list and all(item(v) for v in value)
    if origin is dict:
        item = _check_of(args[1])
        return lambda value: type(value) is dict and all(item(v) for v in value.values())
    exact = frozenset(_EXACT_TYPES[hint])   # type(), not isinstance(): True is an int to isinstance
    return lambda value: type(value) in exact


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
