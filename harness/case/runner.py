"""Run one case from checkpoint to judged result: the stages of the harness in order.

Work that a checkpoint's cases share is computed once, explicitly, and held by
:class:`~harness.case.work.CheckpointWork`: the checkpoint loaded at its own configuration
(:func:`~harness.case.native.load_native`) and, per target, the ``create`` path built and checked on its own
(:func:`~harness.case.paths.evaluate_path`), which the create case reports and the other paths' parity compares
with. Each case is then a row of plain functions of their inputs:

evaluate_path (state → build → dtype, trainable → forward → shapes, features → finite → fidelity) → parity →
drift → timing (:mod:`harness.case.timed`) → verdict. A case's state (:mod:`harness.states`) is applied to the
model before it is resized.

With a user's labelled images (``--images``) and real weights (``hub`` or ``file``), the native model's top-1
accuracy is computed once per checkpoint too (:class:`~harness.case.native.NativeAccuracy`), and each case's
after drift.

Nothing here decides pass or fail except the final call to :func:`harness.case.verdict.judge`, which judges
every check registered in :mod:`harness.case.check_registry`.
"""
from __future__ import annotations

import copy
import datetime
import platform
import time

import torch
from torch import nn

from harness import checks, faults, states
from harness.accuracy import top1_accuracy
from harness.build import LoadFailed, ResizeFailed, Unsupported, set_input_size
from harness.case.native import Native, model_inputs
from harness.case.paths import AFTER_LOAD_RESAMPLING, PathRun, evaluate_path
from harness.case.timed import time_case
from harness.case.verdict import fidelity_failures, judge
from harness.case.work import CheckpointWork, RunOptions, harness_fault
from harness.checkpoints.store import CheckpointError
from harness.runtime.device_lock import checks_lock
from harness.spec.cases import Case, expectation_for
from harness.spec.matrix import Matrix, Tolerances, window_value
from harness.spec.vocabulary import Window
from harness.states import DEFAULT_STATE
from harness.store.case_result import CaseResult


def new_result(case: Case, matrix: Matrix, options: RunOptions) -> CaseResult:
    """A case's record before anything ran: what it is and how it is measured."""
    import timm
    return CaseResult(
        case_id=case.case_id, matrix=matrix.name, model=case.model.label, origin=case.origin_label,
        img_size=list(case.img_size), patch_size=case.patch_size, window_size=_listed(case.window_size), path=case.path,
        state=case.state,
        model_name=case.model.name, model_overrides=case.model.kwargs, family=case.family.name,
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
            time_case(case, model, work, result)   # timing's own dtype and precision say how a timed model is cast
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
        if e.no_head:   # every check compares what the head computes: none of them can be made
            raise Unsupported(f'{case.model.name} has no classification head: {e}') from None
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
