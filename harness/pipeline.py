"""Run one case from checkpoint to judged result: the stages of the harness in order.

Work that a checkpoint's cases share is computed once, explicitly, and held by :class:`CheckpointWork`:
the checkpoint loaded at its own configuration (:func:`load_native`) and, per target, the ``create`` path
built and checked on its own (:func:`evaluate_path`), which the create case reports and the other paths'
parity compares with. Each case is then a row of plain functions of their inputs:

evaluate_path (state → build → dtype, trainable → forward → shapes, features → finite → fidelity) → parity →
drift → timing → verdict. A case's state (:mod:`harness.states`) is applied to the model before it is resized.

With a user's labelled images (``--images``) and real weights (``hub`` or ``file``), the native model's top-1
accuracy is computed once per checkpoint too (:class:`NativeAccuracy`), and each case's after drift.

Nothing here decides pass or fail except the final call to :func:`harness.verdict.judge`.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import math
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from harness import checks, faults, images, states
from harness.accuracy import LabelledImages, labelled_images, top1_accuracy
from harness.build import Built, LoadFailed, ResizeFailed, Unsupported, build_native, build_path, set_input_size
from harness.cases import Case, expectation_for
from harness.checkpoints.origins import origin_named
from harness.checkpoints.source import checkpoint_source
from harness.checkpoints.store import Checkpoint, CheckpointError, checkpoint_for
from harness.device_lock import Holder, checks_lock, timing_lock
from harness.device_peaks import peak_tflops
from harness.families import Geometry, Target
from harness.flops import achieved_tflops, flops_per_image
from harness.image_tree import ImageTree, read_image_tree
from harness.matrix import Matrix, TimingConfig, Tolerances, Window, window_value
from harness.results import CaseResult
from harness.states import DEFAULT_STATE
from harness.timing import Timing, cpu_cores, time_forward
from harness.verdict import fidelity_failures, judge

# set_input_size and dynamic_img_size resample with timm's defaults; at create time the origin's loader may not
AFTER_LOAD_RESAMPLING = ('bicubic', True)


@dataclass(frozen=True)
class RunOptions:
    device: torch.device
    cache_dir: Path                  # synthesized checkpoints, timm releases, the machine-wide timing lock
    out_dir: Path                    # the run's folder: results.jsonl, run.json, the run's own device lock
    timing: TimingConfig             # resolved for the device: no setting left None
    images: Path | None = None       # labelled images for top-1 accuracy: --images, else the matrix's images:
    say: Callable[[str], None] = print   # one line for the user's terminal (e.g. waiting for the device)
    holder: Holder = field(default_factory=Holder.this_process)   # this run, as runs waiting for the device see it


@dataclass(frozen=True)
class NativeAccuracy:
    """The user's images labelled for a checkpoint's classes, and its top-1 accuracy on them at its own size."""
    images: LabelledImages
    top1: float


@dataclass
class Native:
    """A checkpoint loaded at its own configuration, its outputs at its own size, and the source weights that
    fidelity resamples (with how far the native load is from them, when they are known, and what they are
    where they are not all the checkpoint's own); its accuracy when there are labelled images and the
    weights are real."""
    checkpoint: Checkpoint
    built: Built
    geometry: Geometry
    outputs: checks.Outputs
    reference: dict[str, torch.Tensor]
    load_diff: checks.TensorDiff | None
    accuracy: NativeAccuracy | None = None
    reference_note: str | None = None


@dataclass
class PathFigures:
    """What building and checking one path at one target recorded (fields named as in CaseResult)."""
    load_error: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    resize_error: str | None = None
    shape_errors: list[str] = field(default_factory=list)
    nonfinite_outputs: list[str] = field(default_factory=list)
    fidelity_weights_max_abs_diff: float | None = None
    fidelity_worst_tensor: str | None = None
    fidelity_outputs_max_abs_diff: float | None = None
    dtype_changes: list[str] = field(default_factory=list)
    trainable_changes: list[str] = field(default_factory=list)
    feature_errors: list[str] = field(default_factory=list)


@dataclass
class PathRun:
    """One path built at one target and checked on its own; ``outputs`` is None when it did not get that far,
    ``unsupported`` says why when the release cannot make the call the path needs."""
    model: nn.Module | None
    outputs: checks.Outputs | None
    figures: PathFigures
    unsupported: str | None = None


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

    def native(self, case: Case) -> Native:
        """The case's checkpoint loaded at its own configuration (a failure to load is remembered too)."""
        key = (case.model, case.origin)
        if key != self._key:
            self._key, self._native, self._create_runs = key, None, {}
            try:
                checkpoint = checkpoint_for(case.model, case.origin, self.matrix.seed, self.options.cache_dir,
                                            self.options.say)
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


def load_native(checkpoint: Checkpoint, case: Case, image_set: torch.Tensor, device: torch.device,
                image_tree: ImageTree | None = None) -> Native:
    built = build_native(checkpoint)
    reference, note, compared = checkpoint.reference_state_dict(), None, True
    if reference is None:   # hub or user file: its tensors read back from the file by the harness
        source = checkpoint_source(checkpoint, built.model)
        reference, note, compared = source.tensors, source.note, source.from_file > 0
    model = built.model.to(device)
    geometry = case.family.source_geometry(model, case.model)
    outputs = checks.forward_outputs(model, model_inputs(model, geometry.img_size, image_set, device))
    accuracy = native_accuracy(checkpoint, model, geometry.img_size, image_tree, device)
    load_diff = checks.state_dict_diff(model.state_dict(), reference) if compared else None
    return Native(checkpoint, built, geometry, outputs, reference, load_diff, accuracy, note)


def native_accuracy(checkpoint: Checkpoint, model: nn.Module, size: tuple[int, int], image_tree: ImageTree | None,
                    device: torch.device) -> NativeAccuracy | None:
    """None without labelled images, or when the weights are synthesized: their accuracy means nothing."""
    if image_tree is None or origin_named(checkpoint.origin).synthesized:
        return None
    labelled = labelled_images(image_tree, model.num_classes)
    return NativeAccuracy(labelled, top1_accuracy(model, size, labelled, device))


def model_inputs(model: nn.Module, size: tuple[int, int], image_set: torch.Tensor,
                 device: torch.device) -> torch.Tensor:
    """The image set at ``size``, normalised as the model's pretrained config says, in the dtype of the model's
    first floating parameter (a model cast to bf16 takes bf16 images, as a user feeds it)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    batch = images.normalized(images.resized(image_set, size),
                              cfg.get('mean', (0.485, 0.456, 0.406)), cfg.get('std', (0.229, 0.224, 0.225)))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), batch.dtype)
    return batch.to(device, dtype=dtype)


def new_result(case: Case, matrix: Matrix, options: RunOptions) -> CaseResult:
    """A case's record before anything ran: what it is and how it is measured."""
    import timm
    return CaseResult(
        case_id=case.case_id, matrix=matrix.name, model=case.model.label, origin=case.origin_label,
        img_size=list(case.img_size), patch_size=case.patch_size, window_size=_listed(case.window_size), path=case.path,
        state=case.state,
        model_name=case.model.name, model_overrides=case.model.kwargs,
        timm_version=timm.__version__, torch_version=torch.__version__, device=options.device.type,
        device_name=device_name(options.device), dtype=options.timing.dtype, precision=options.timing.precision,
        compile=options.timing.compile, channels_last=options.timing.channels_last,
        batch_size=options.timing.batch_size)


def run_case(case: Case, work: CheckpointWork) -> CaseResult:
    import timm
    matrix, options = work.matrix, work.options
    result = new_result(case, matrix, options)
    started = time.monotonic()
    try:
        never = case.family.unsupported(case.model.name) \
            or states.device_problem(case.state, options.device.type)   # the model cannot take another size at all,
        if never:                                                        # or the device cannot compute in the state
            raise Unsupported(never)
        with checks_lock(options.out_dir, options.device):
            model, unsupported = _checks(case, work, result)
        if model is not None and options.timing.enabled and case.state == DEFAULT_STATE:
            _time(case, model, work, result)   # timing's own dtype and precision say how a timed model is cast
        if case.path == 'create':
            work.release_create_model(case)
        judge(result, _case_tolerances(matrix.tolerances, case.path, options.device.type, case.state),
              expectation_for(case, matrix, timm.__version__), unsupported)
    except Unsupported as e:
        result.status, result.reason = 'unsupported', str(e)
    except CheckpointError as e:
        result.status, result.reason = 'error', f'checkpoint: {e}'
    except Exception as e:   # noqa: BLE001 - a harness bug in one case must not lose the others
        if faults.is_out_of_memory(e):
            result.status, result.reason = 'resource', f'out of memory: {faults.describe(e, limit=3)}'
        else:
            result.status, result.reason = 'error', harness_fault(e)
    return finished(result, time.monotonic() - started)


def harness_fault(error: Exception) -> str:
    """The reason of a case stopped by the harness's own fault (its ``error``, never timm's ``failed``): a full
    disk in one line, anything else with the innermost frames of its traceback."""
    if faults.is_disk_full(error):
        return f'disk full: {faults.describe(error, limit=1)}'
    return f'{type(error).__name__}: {error}\n{traceback.format_exc(limit=-3)}'


def _case_tolerances(tol: Tolerances, path: str, device_type: str, state: str) -> Tolerances:
    """The limits a case of ``path`` in ``state`` on ``device_type`` is judged against."""
    return states.scaled_tolerances(tol.for_path(path, device_type), state)


def finished(result: CaseResult, duration_s: float) -> CaseResult:
    """The result, stamped with how long its case took and when it ended."""
    result.duration_s = round(duration_s, 3)
    result.finished_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    return result


def _checks(case: Case, work: CheckpointWork, result: CaseResult) -> tuple[nn.Module | None, str | None]:
    """Fill in the figures of every check the release can run: the built model for timing (None if it did not
    get that far), and why the path's own call cannot be made on this release (None: it could).

    A path the release cannot build still gets the checkpoint's invariants (load, reload and finite at the
    native size, and noop for ``set_input_size`` where the release has the method): old releases change models
    silently exactly where they lack a newer argument."""
    try:
        native = work.native(case)
    except LoadFailed as e:
        result.load_error, result.missing_keys, result.unexpected_keys = e.error, e.missing_keys, e.unexpected_keys
        return None, None
    except ResizeFailed as e:   # timm resampled the checkpoint at its own configuration, and raised
        result.resize_error = f'native size: {e}'
        return None, None
    except checks.ForwardFailed as e:
        if faults.is_out_of_memory(e.error):
            raise e.error from None
        result.shape_errors = [f'native size: {e}']
        return None, None
    _record_source(case, native, result)
    accuracy = native.accuracy if case.state == DEFAULT_STATE else None   # measured on the fp32 model in eval mode
    if accuracy is not None:
        result.accuracy_images, result.accuracy_top1_native = len(accuracy.images.files), accuracy.top1
    if case.path == 'set_input_size':
        _noop(case, native, work.images, work.options.device, result)
    run = work.create_run(case, native) if case.path == 'create' else \
        evaluate_path(case.path, case, native, work.images, work.options.device)
    for name, value in run.figures.__dict__.items():
        setattr(result, name, value)
    result.nonfinite_outputs = [f'native-size {name}' for name in checks.nonfinite(native.outputs)] \
        + result.nonfinite_outputs
    if run.outputs is None:
        return None, run.unsupported
    if case.path != 'create':
        _parity(case, native, run.outputs, work.create_run(case, native), work.matrix.tolerances, result)
    result.output_fingerprint = checks.fingerprint(run.outputs)
    result.drift_cosine = checks.mean_cosine(run.outputs.pooled, native.outputs.pooled)
    result.drift_top1_agreement = checks.top1_agreement(run.outputs.logits, native.outputs.logits)
    if accuracy is not None:
        result.accuracy_top1 = top1_accuracy(run.model, case.img_size, accuracy.images, work.options.device)
    return run.model, None


def _record_source(case: Case, native: Native, result: CaseResult) -> None:
    source = native.geometry
    result.source_img_size = list(source.img_size)
    result.source_patch_size = source.patch_size[0] if case.family.patch_sizes_apply else None
    result.source_window_size = _listed(window_value(source.window_sizes[0])) if source.window_sizes else None
    if native.load_diff is not None:
        result.native_max_abs_diff, result.native_worst_tensor = native.load_diff.max_abs_diff, native.load_diff.worst
    result.reference_note = native.reference_note


def _noop(case: Case, native: Native, image_set: torch.Tensor, device: torch.device, result: CaseResult) -> None:
    """``set_input_size(img_size=<its own size>)``, called as users call it, must change neither the model's
    stored configuration (a window it was not asked to change) nor its outputs. A release without
    ``set_input_size`` runs no noop (its figures stay None)."""
    model = states.apply_state(copy.deepcopy(native.built.model), case.state)
    inputs = model_inputs(model, native.geometry.img_size, image_set, device)
    before = native.outputs if case.state == DEFAULT_STATE else checks.forward_outputs(model, inputs)
    try:
        set_input_size(model, {'img_size': native.geometry.img_size})
    except Unsupported:
        return
    except ResizeFailed as e:
        result.noop_changes = [str(e)]
        return
    if case.family.stores_geometry:
        result.noop_changes = checks.geometry_errors(case.family, model, native.geometry)
    try:
        outputs = checks.forward_outputs(model, inputs)
    except checks.ForwardFailed as e:
        result.noop_changes.append(f'then {e}')
        return
    result.noop_max_abs_diff = checks.max_abs_diff(outputs.logits, before.logits)


def evaluate_path(path: str, case: Case, native: Native, image_set: torch.Tensor, device: torch.device) -> PathRun:
    """Build ``path`` at the case's target in the case's state and check it on its own: load, resize, dtype,
    trainable, shapes, features, finite, fidelity.

    ``set_input_size`` resizes a copy of the native model put in the state; ``create`` and ``dynamic`` build a
    model and put it in the state after (create resamples while it loads, before any user can; dynamic resizes
    in the forward pass). The dtype and trainable checks compare the model after the resize (set_input_size:
    before it is moved to the device, which would hide a tensor the resize left elsewhere; the others: after
    the forward pass) with the model in its state before."""
    figures = PathFigures()
    family, source = case.family, native.geometry
    start = native.built
    if path == 'set_input_size' and case.state != DEFAULT_STATE:
        start = Built(states.apply_state(copy.deepcopy(native.built.model), case.state),
                      native.built.missing_keys, native.built.unexpected_keys)
    before = states.snapshot(start.model, case.state) if path == 'set_input_size' else None
    try:
        built = build_path(path, native.checkpoint, family, source, case.target, start)
    except Unsupported as e:
        return PathRun(None, None, figures, unsupported=str(e))
    except LoadFailed as e:
        figures.load_error, figures.missing_keys, figures.unexpected_keys = e.error, e.missing_keys, e.unexpected_keys
        return PathRun(None, None, figures)
    except ResizeFailed as e:
        figures.resize_error = str(e)
        return PathRun(None, None, figures)
    figures.missing_keys, figures.unexpected_keys = built.missing_keys, built.unexpected_keys
    if path == 'set_input_size':
        _state_changes(before, built.model, figures)
        model = built.model.to(device)
    else:
        model = states.apply_state(built.model.to(device), case.state)
        before = states.snapshot(model, case.state)
    inputs = model_inputs(model, case.img_size, image_set, device)
    try:
        outputs = checks.forward_outputs(model, inputs)
    except checks.ForwardFailed as e:
        if faults.is_out_of_memory(e.error):
            raise e.error from None
        if faults.raised_while_resampling(e.error):   # dynamic_img_size resamples during the forward pass
            figures.resize_error = str(e)
        else:
            figures.shape_errors = [str(e)]
        return PathRun(None, None, figures)
    if path != 'set_input_size':
        _state_changes(before, model, figures)
    figures.feature_errors = checks.feature_errors(model, case.img_size, outputs.intermediate_shapes)
    expected = family.expected_geometry(source, case.target)
    figures.shape_errors = checks.shape_errors(outputs, family.expected_shapes(expected, len(image_set)))
    if path != 'dynamic' and family.stores_geometry:   # dynamic stores nothing resized: the source's stays
        figures.shape_errors += checks.geometry_errors(family, model, expected)
    figures.nonfinite_outputs = checks.nonfinite(outputs)
    _fidelity(path, case, native, model, outputs, inputs, figures)
    return PathRun(model, outputs, figures)


def _state_changes(before: states.Snapshot, model: nn.Module, figures: PathFigures) -> None:
    figures.dtype_changes = states.dtype_changes(before, model)
    figures.trainable_changes = states.trainable_changes(before, model)


def _fidelity(path: str, case: Case, native: Native, model: nn.Module, outputs: checks.Outputs,
              inputs: torch.Tensor, figures: PathFigures) -> None:
    """Compare what the path computes with the harness's own resample of the source checkpoint."""
    family, checkpoint = case.family, native.checkpoint
    if 'fidelity' not in family.checks:   # nothing resampled: nothing to recompute
        return
    interpolation, antialias = family.create_resampling(case.model.name, checkpoint) if path == 'create' \
        else AFTER_LOAD_RESAMPLING
    computed = family.computed_geometry(native.geometry, case.target, path)
    try:
        expected_weights = family.resample_state_dict(native.reference, native.geometry, computed, interpolation,
                                                      antialias)
    except ValueError as e:   # the oracles refuse a tensor that does not fit the geometry they are given
        figures.fidelity_weights_max_abs_diff = math.inf
        figures.fidelity_worst_tensor = f'the checkpoint as the model built at its own configuration reads it ({e})'
        return
    # what is resampled per forward is never stored: compare outputs with a model that computes our resample
    if path == 'dynamic' or family.resamples_per_forward:
        reference = states.apply_state(family.dynamic_reference(native.built.model, case.model, native.geometry,
                                                                computed, expected_weights).to(inputs.device),
                                       case.state)
        want = checks.forward_outputs(reference, inputs)
        figures.fidelity_outputs_max_abs_diff = checks.max_abs_diff(outputs.logits, want.logits)
    worst = _worst_tensor_diff(path, case, native, model, computed, expected_weights)
    if worst is not None:
        figures.fidelity_weights_max_abs_diff, figures.fidelity_worst_tensor = worst.max_abs_diff, worst.worst


def _worst_tensor_diff(path: str, case: Case, native: Native, model: nn.Module, computed: Geometry,
                       expected_weights: dict[str, torch.Tensor]) -> checks.TensorDiff | None:
    """The largest difference between the tensors the path's model holds or computes and the harness's: the
    tensors the forward pass computes at the target (resampled pos-embed, rope, shifted-window masks) as timm's
    code computes them on every path (dynamic: per forward, never stored), and on the paths that store a resample
    the state dict and derived tensors. None where the path has nothing to compare."""
    family = case.family
    diffs = []
    if path != 'dynamic' or family.resamples_per_forward:
        actual = {**model.state_dict(), **family.derived_tensors(model)}
        expected = {**expected_weights,
                    **family.expected_derived_tensors(expected_weights, case.model, native.geometry, computed)}
        diffs.append(checks.state_dict_diff(actual, expected))
    if not family.resamples_per_forward:
        try:
            actual = family.forward_tensors(model, computed)
        except (RuntimeError, AssertionError) as e:
            diffs.append(_unfit_for_expected_geometry(e))
        else:
            expected = family.expected_forward_tensors(expected_weights, case.model, native.geometry, computed)
            if actual or expected:
                diffs.append(checks.state_dict_diff(actual, expected, strict=True))
    # first of equals wins: a stored tensor, not the forward tensor computed from it, is named as the cause
    return max(diffs, key=lambda d: math.inf if math.isnan(d.max_abs_diff) else d.max_abs_diff, default=None)


def _unfit_for_expected_geometry(error: Exception) -> checks.TensorDiff:
    """timm's own step raised on a blank input of the expected geometry: the model's tensors do not fit it (a
    pos-embed left at its old length by a resize that ignored the patch). A difference as large as can be, named
    with what timm raised: timm's fault, which shapes usually names too, not the harness's."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return checks.TensorDiff(math.inf, f'forward tensors at the expected geometry ({type(error).__name__}: '
                                       f'{message[:200]})')


def _parity(case: Case, native: Native, outputs: checks.Outputs, create: PathRun, tol: Tolerances,
            result: CaseResult) -> None:
    """Record the path's distance to the create path, and why it is not judged when it is not."""
    if case.path in case.family.same_model_as_create:   # a check that compares a thing with itself cannot fail
        result.parity_note = (f'not judged: {case.path} builds the same model as create ({case.family.name}), so '
                              f'parity would compare a model with itself')
        return
    if create.outputs is None:
        result.parity_note = 'not judged: the create path did not build or run (its own case says why)'
        return
    result.parity_max_abs_diff = checks.max_abs_diff(outputs.logits, create.outputs.logits)
    result.parity_cosine = checks.min_cosine(outputs.logits, create.outputs.logits)
    result.parity_note = documented_difference(case, native) or (
        'not judged: the create path fails fidelity (its own case reports it)'
        if fidelity_failures(create.figures, _case_tolerances(tol, 'create', result.device, case.state)) else None)


def documented_difference(case: Case, native: Native) -> str | None:
    """Why timm documents the case's path and create as computing different models at this target, or None."""
    family, source, checkpoint = case.family, native.geometry, native.checkpoint
    create = family.computed_geometry(source, case.target, 'create')
    path = family.computed_geometry(source, case.target, case.path)
    if (path.window_sizes, path.shift_sizes) != (create.window_sizes, create.shift_sizes):
        return (f'documented difference: {case.path} computes with windows {_sizes(path.window_sizes)} and shifts '
                f'{_sizes(path.shift_sizes)} (the source configuration), create with {_sizes(create.window_sizes)} '
                f'and {_sizes(create.shift_sizes)}')
    resampled = create.grid_size != source.grid_size or create.patch_size != source.patch_size
    interpolation, antialias = family.create_resampling(case.model.name, checkpoint)
    if resampled and (interpolation, antialias) != AFTER_LOAD_RESAMPLING:
        return (f'documented difference: the {checkpoint.origin} loader resamples {interpolation}'
                f'{" with" if antialias else " without"} antialiasing at create time, '
                f'{case.path} bicubic with antialiasing')
    return None


def _listed(window: Window | None) -> int | list[int] | None:
    """A window as results hold it: an int, or [H, W] (JSON has no tuples)."""
    return list(window) if isinstance(window, tuple) else window


def _sizes(sizes: tuple[tuple[int, int], ...]) -> str:
    return '[' + ', '.join(f'{h}x{w}' for h, w in sizes) + ']'


def _time(case: Case, model: nn.Module, work: CheckpointWork, result: CaseResult) -> None:
    options = work.options
    with timing_lock(options.out_dir, options.device, options.cache_dir, options.holder, options.say), \
            work.parked_while_timing(model):
        result.flops_per_image = flops_per_image(model, case.img_size, options.device)
        timing = time_forward(model, case.img_size, options.timing, options.device)
    record_timing(result, timing, [1] * timing.repeats)


def record_timing(result: CaseResult, timing: Timing, rounds: list[int]) -> None:
    """The result's timing fields from ``timing``, and the work figures from them and the result's
    ``flops_per_image``; ``rounds[i]`` is the round sample i was timed in (all 1 for a case timed in one go;
    ``harness ab`` interleaves rounds between two releases)."""
    result.time_median_ms, result.time_iqr_ms, result.time_min_ms = timing.median_ms, timing.iqr_ms, timing.min_ms
    result.time_p50_ms, result.time_p90_ms, result.time_p99_ms = (timing.percentile_ms(q) for q in (50, 90, 99))
    result.time_cv, result.timing_stable, result.timing_max_cv = timing.cv, timing.stable, timing.max_cv
    result.images_per_s, result.peak_memory_mb = timing.images_per_s, timing.peak_memory_mb
    result.batch_size, result.batch_size_used = timing.batch_size, timing.batch_size_used
    result.timing_repeats, result.timing_budget_s = timing.repeats, timing.budget_s
    result.timing_median_rse = timing.median_rse
    result.time_samples_ms, result.time_sample_rounds = list(timing.samples_ms), list(rounds)
    result.load_average_start, result.load_average_end = timing.load_average
    result.cpu_cores = cpu_cores()
    result.achieved_tflops = achieved_tflops(result.flops_per_image, timing.images_per_s)
    result.device_peak_tflops = peak_tflops(result.device_name, result.dtype,
                                            tf32=torch.get_float32_matmul_precision() != 'highest')
    result.peak_fraction = (result.achieved_tflops / result.device_peak_tflops
                            if result.achieved_tflops is not None and result.device_peak_tflops else None)


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{_cpu_model()}, {torch.get_num_threads()} threads'


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
