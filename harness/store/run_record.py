"""``<out>/run.json``: what a run was started with, written before its first case.

One results folder holds one run. ``--resume`` compares the folder's run.json with the run about to start and
refuses when a setting that changes the figures differs (:func:`differences`), so resumed records never mix
releases, devices or matrices; a plain re-run names the old results after the run.json start time.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from harness.store import schema
from harness.store.atomic_file import write_atomically
from harness.store.run_settings import SETTINGS

if TYPE_CHECKING:   # the real imports are deferred: the command line reads run.json before importing torch
    import torch

    from harness.image_tree import ImageTree
    from harness.spec.matrix import Matrix
    from harness.timing.config import TimingConfig

RUN_FILE = 'run.json'
# settings a resumed run (and every shard of a merge) must share, and how a message names them
MUST_MATCH = {setting.name: setting.label for setting in SETTINGS if setting.must_match}


class RunRecordError(ValueError):
    """A run.json that cannot be read; ``str()`` is ``<file>: <problem>``."""


@dataclass
class RunRecord:
    """Every field has a default so that a run.json written by an older harness (fewer fields) still reads."""
    results_schema: int = 1   # run.json's layout (harness.store.schema.RUN): 1 before this field, and for a record
                              # built without one; describe_run stamps the current layout
    timm_version: str = ''
    torch_version: str = ''
    harness_version: str = ''
    harness_commit: str = ''              # `git describe --always --dirty` of the harness source, when a checkout
    cuda_version: str | None = None       # what torch was built with (None: a CPU build)
    cudnn_version: int | None = None
    cpu_threads: int | None = None        # torch's intra-op threads per process
    math_flags: dict[str, bool] = field(default_factory=dict)   # TF32 and cuDNN settings timing runs with
    device: str = ''                      # device type: cpu or cuda
    device_name: str = ''
    dtype: str = ''
    precision: str = 'amp'                # amp or cast; older runs timed under autocast
    compile: bool = False
    channels_last: bool = False
    batch_size: int | None = None
    timing_budget_s: float | None = None  # None when the run times nothing (--no-timing)
    timing_median_rse: float | None = None   # the same
    timing_max_cv: float | None = None       # the same
    timing_rounds: int | None = None      # harness ab: rounds each case's timing was split into, alternating releases
    matrix_name: str = ''
    matrix_sha256: str = ''               # of the matrix file's bytes
    shard: str = ''                       # K/N for one shard of the matrix's cases; '' for all of them
    full_size: bool = False               # zoo entries at their real configuration (--full-size), not in miniature
    images: str = ''                      # the labelled images' folder (--images or the matrix's); '' for none
    images_sha256: str = ''               # of their paths below it and sizes; '' for none
    argv: list[str] = field(default_factory=list)
    started_at: str = ''                  # UTC, ISO 8601
    finished_at: str = ''                 # the same; empty while the run goes on (or after it was killed)

    def started(self) -> datetime.datetime | None:
        try:
            return datetime.datetime.fromisoformat(self.started_at)
        except ValueError:
            return None


def describe_run(matrix: Matrix, device: torch.device, timing: TimingConfig, argv: list[str],
                 shard: str | None = None, images: ImageTree | None = None) -> RunRecord:
    """The record of the run this process is about to start. ``timing`` is resolved for the device, with the
    command line's overrides applied; ``images`` are the labelled images, if any. Imports timm and torch, so
    call it after the cheap checks."""
    import timm
    import torch

    from harness.case.runner import device_name
    return RunRecord(
        results_schema=schema.RUN.version, timm_version=timm.__version__, torch_version=torch.__version__,
        harness_version=_harness_version(), harness_commit=_harness_commit(), cuda_version=torch.version.cuda,
        cudnn_version=torch.backends.cudnn.version() if device.type == 'cuda' else None,
        cpu_threads=torch.get_num_threads(), math_flags=_math_flags(), device=device.type,
        device_name=device_name(device), dtype=timing.dtype, precision=timing.precision, compile=timing.compile,
        channels_last=timing.channels_last, batch_size=timing.batch_size,
        timing_budget_s=timing.budget_s if timing.enabled else None,
        timing_median_rse=timing.median_rse if timing.enabled else None,
        timing_max_cv=timing.max_cv if timing.enabled else None, matrix_name=matrix.name,
        matrix_sha256=hashlib.sha256(Path(matrix.path).read_bytes()).hexdigest(), shard=shard or '',
        full_size=matrix.selection.full_size, images=str(images.root) if images else '',
        images_sha256=images.sha256 if images else '', argv=list(argv),
        started_at=_now())


def mark_finished(out_dir: Path) -> None:
    """Stamp the folder's run.json with the time the run (or a resumed part of it) ended."""
    record = read_run_record(out_dir)
    if record is not None:
        write_run_record(out_dir, dataclasses.replace(record, finished_at=_now()))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def _math_flags() -> dict[str, bool]:
    import torch

    from harness.timing.forward import CUDNN_BENCHMARK
    cudnn = torch.backends.cudnn
    return {'matmul_allow_tf32': torch.backends.cuda.matmul.allow_tf32, 'cudnn_allow_tf32': cudnn.allow_tf32,
            'cudnn_benchmark': CUDNN_BENCHMARK, 'cudnn_deterministic': cudnn.deterministic}


def _harness_commit() -> str:
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(['git', '-C', str(source), 'describe', '--always', '--dirty', '--abbrev=12'],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ''
    return done.stdout.strip() if done.returncode == 0 else ''


def read_run_record(out_dir: Path) -> RunRecord | None:
    """The folder's run.json, or None when there is none (a folder from a harness before run.json)."""
    path = out_dir / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunRecordError(f'{path}: cannot be read as JSON ({e}); expected the run.json harness run '
                             f'writes') from None
    if not isinstance(data, dict):
        raise RunRecordError(f'{path}: expected a JSON object, got {type(data).__name__}')
    try:
        data = schema.upgrade(schema.RUN, data)
    except schema.SchemaError as e:
        raise RunRecordError(f'{path}: {e}') from None
    known = {f.name for f in dataclasses.fields(RunRecord)}
    return RunRecord(**{k: v for k, v in data.items() if k in known})   # later fields: ignored


def write_run_record(out_dir: Path, record: RunRecord) -> Path:
    """Write run.json whole or not at all: a crash mid-write must not leave a file --resume cannot read. Always
    in the current layout: a record of an older one goes through :func:`harness.store.schema.upgrade` first."""
    data = schema.upgrade(schema.RUN, dataclasses.asdict(record))
    return write_atomically(out_dir / RUN_FILE, json.dumps(data, indent=2) + '\n')


def check_finished(out_dir: Path, record: RunRecord) -> None:
    """Refuse a run that did not finish (killed, or still running): its run.json has no end time. (A run.json
    from before end times were recorded cannot say, and passes: :mod:`harness.store.schema`.)"""
    if not record.finished_at:
        raise RunRecordError(f'{out_dir / RUN_FILE}: finished_at is empty: the run did not finish (killed, or still '
                             f'running); expected a finished run (finish it with --resume)')


def differences(old: RunRecord, new: RunRecord) -> list[str]:
    """The settings in :data:`MUST_MATCH` that differ, each as ``<setting> was <old>, now <new>``."""
    return [f'{label} was {_shown(getattr(old, key))}, now {_shown(getattr(new, key))}'
            for key, label in MUST_MATCH.items() if getattr(old, key) != getattr(new, key)]


def _shown(value: object) -> str:
    return str(value) if value not in ('', None) else 'unrecorded'


def _harness_version() -> str:
    try:
        return metadata.version('timm-harness')
    except metadata.PackageNotFoundError:   # run from a checkout that was never installed
        return 'unknown'
