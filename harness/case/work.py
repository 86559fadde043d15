"""What a run's cases share, computed once in a worker: the run's options, and per checkpoint the native model
(:mod:`harness.case.native`) and the create path's run for each target (:mod:`harness.case.paths`), which the
create case reports and the other paths' parity compares with.
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from harness import checks, faults, images
from harness.build import LoadFailed, ResizeFailed, Unsupported
from harness.case.native import Native, load_native
from harness.case.paths import PathRun, evaluate_path
from harness.checkpoints.store import Checkpoint, CheckpointError, checkpoint_for, discard_if_disposable
from harness.families import Target
from harness.image_tree import read_image_tree
from harness.runtime.device_lock import Holder
from harness.spec.cases import Case
from harness.spec.matrix import Matrix
from harness.timing.config import TimingConfig


@dataclass(frozen=True)
class RunOptions:
    device: torch.device
    cache_dir: Path                  # synthesized checkpoints, timm releases, the machine-wide timing lock
    out_dir: Path                    # the run's folder: results.jsonl, run.json, the run's own device lock
    timing: TimingConfig             # resolved for the device: no setting left None
    images: Path | None = None       # labelled images for top-1 accuracy: --images, else the matrix's images:
    say: Callable[[str], None] = print   # one line for the user's terminal (e.g. waiting for the device)
    holder: Holder = field(default_factory=Holder.this_process)   # this run, as runs waiting for the device see it


class CheckpointWork:
    """What the cases of one checkpoint share, computed once in a worker: the native model, and the create
    path's run for each target. xdist keeps a checkpoint's cases on one worker in a row, so only the latest
    checkpoint is held; a create run keeps its model only until the create case has been timed."""

    def __init__(self, matrix: Matrix, options: RunOptions):
        self.matrix = matrix
        self.options = options
        self.images = images.dead_leaves(matrix.num_images, matrix.seed, options.cache_dir)
        self.image_tree = read_image_tree(options.images) if options.images else None
        self._key: tuple | None = None
        self._native: Native | Exception | None = None
        self._create_runs: dict[tuple[Target, str], PathRun] = {}   # by target and state
        self._checkpoint: Checkpoint | None = None

    def native(self, case: Case) -> Native:
        """The case's checkpoint loaded at its own configuration (a failure to load is remembered too)."""
        key = (case.model, case.origin)
        if key != self._key:
            discard_if_disposable(self._checkpoint)
            self._key, self._native, self._create_runs, self._checkpoint = key, None, {}, None
            try:
                checkpoint = self._checkpoint = checkpoint_for(case.model, case.origin, self.matrix.seed,
                                                               self.options.cache_dir, self.options.say)
                self._native = load_native(checkpoint, case, self.images, self.options.device, self.image_tree)
            except (LoadFailed, ResizeFailed, checks.ForwardFailed, Unsupported, CheckpointError) as e:
                self._native = e
            except Exception as e:   # noqa: BLE001 - every case of the checkpoint is told why, not only the first
                if faults.is_out_of_memory(e) or faults.is_disk_full(e):
                    self._key = None   # a limit of the machine: the next case tries again
                    raise
                self._native = CheckpointError(f'it could not be loaded at its own configuration: {harness_fault(e)}')
        if isinstance(self._native, Exception):
            raise self._native
        return self._native

    def create_run(self, case: Case, native: Native) -> PathRun:
        """The create path at the case's target, in the case's state (parity compares a path with create in the
        same state)."""
        key = (case.target, case.state)
        if key not in self._create_runs:
            self._create_runs[key] = evaluate_path('create', case, native, self.images, self.options.device)
        return self._create_runs[key]

    def release_create_model(self, case: Case) -> None:
        """The create case has used its model: keep only its figures and outputs, for the other paths' parity."""
        if (case.target, case.state) in self._create_runs:
            self._create_runs[case.target, case.state].model = None

    def parked_while_timing(self, timed: nn.Module) -> contextlib.AbstractContextManager[None]:
        """The models held here other than ``timed`` (the native model, create models not yet timed), moved off
        the device while ``timed`` is timed: its peak memory is then its own, and its batch has the memory."""
        held = [run.model for run in self._create_runs.values() if run.model is not None]
        if isinstance(self._native, Native):
            held.append(self._native.built.model)
        return parked([model for model in held if model is not timed], self.options.device)


@contextlib.contextmanager
def parked(models: list[nn.Module], device: torch.device) -> Iterator[None]:
    """``models`` in host memory for the duration, then back on ``device`` (nothing to do on the CPU)."""
    if device.type == 'cpu':
        yield
        return
    for model in models:
        model.to('cpu')
    try:
        yield
    finally:
        for model in models:
            model.to(device)


def harness_fault(error: Exception) -> str:
    """The reason of a case stopped by the harness's own fault (its ``error``, never timm's ``failed``): a full
    disk in one line, anything else with the innermost frames of its traceback."""
    if faults.is_disk_full(error):
        return f'disk full: {faults.describe(error, limit=1)}'
    return f'{type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}'
