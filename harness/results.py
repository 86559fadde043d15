"""One JSON line per finished case: the record every later stage (report, resume, compare) reads.

Lines are appended under an exclusive file lock as each case finishes, so a crash loses nothing and
xdist workers never interleave partial lines.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

STATUSES = ('passed', 'failed', 'xfailed', 'xpassed', 'unsupported', 'error')
UNEXPECTED = ('failed', 'xpassed', 'error')   # statuses that make `harness run` exit 1
RESULTS_FILE = 'results.jsonl'


@dataclass
class CaseResult:
    # identity of the case
    case_id: str
    matrix: str
    model: str
    origin: str
    img_size: list[int]
    patch_size: int | None
    window_size: int | None
    path: str
    model_name: str = ''                                   # the timm name (``model`` is the matrix label)
    model_overrides: dict[str, Any] = field(default_factory=dict)   # constructor overrides of the checkpoint
    source_img_size: list[int] | None = None
    source_patch_size: int | None = None
    source_window_size: int | None = None
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
    batch_size: int | None = None
    finished_at: str = ''
    duration_s: float | None = None
    # load
    load_error: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    native_max_abs_diff: float | None = None    # source-size load vs the synthesized weights
    native_worst_tensor: str | None = None
    # shapes
    shape_errors: list[str] = field(default_factory=list)
    # fidelity
    fidelity_weights_max_abs_diff: float | None = None
    fidelity_worst_tensor: str | None = None
    fidelity_outputs_max_abs_diff: float | None = None
    # parity (against the `create` path)
    parity_max_abs_diff: float | None = None
    parity_cosine: float | None = None
    # drift (target size vs native size)
    drift_cosine: float | None = None
    drift_top1_agreement: float | None = None
    # timing
    time_median_ms: float | None = None
    time_iqr_ms: float | None = None
    time_min_ms: float | None = None
    images_per_s: float | None = None
    peak_memory_mb: float | None = None
    timing_repeats: int | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False)


def append_result(out_dir: Path, result: CaseResult) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    line = result.to_json() + '\n'
    with open(out_dir / RESULTS_FILE, 'a+') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            if _ends_mid_line(f):
                line = '\n' + line   # a crash cut the last line short: do not glue this record onto it
            f.write(line)
            f.flush()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ends_mid_line(f) -> bool:
    size = f.seek(0, 2)
    if size == 0:
        return False
    f.seek(size - 1)
    last = f.read(1)
    f.seek(0, 2)
    return last != '\n'


def read_results(path: Path) -> list[dict[str, Any]]:
    """All records of a results file; the last record of a case wins (a resumed run may repeat one)."""
    by_case: dict[tuple[str, str], dict[str, Any]] = {}
    for record in _iter_lines(path):
        by_case[record.get('matrix', ''), record['case_id']] = record
    return list(by_case.values())


def finished_case_ids(path: Path, matrix_name: str) -> set[str]:
    """Cases of a matrix that reached a verdict; `error` cases are retried by --resume."""
    if not path.exists():
        return set()
    return {r['case_id'] for r in read_results(path) if r.get('status') != 'error' and r.get('matrix') == matrix_name}


def _iter_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # a line cut short by a crash: everything before it still counts
                continue
