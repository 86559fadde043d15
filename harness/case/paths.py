"""One build path at one target, built and checked on its own: load, resize, dtype, trainable, shapes, features,
finite, fidelity (:func:`evaluate_path`). A plain function of the case, the checkpoint's :class:`Native` and the
images: the create path's run is shared by a checkpoint's cases (:mod:`harness.case.work`), the others' are a
case's own (:mod:`harness.case.runner`).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from harness import checks, faults, states
from harness.build import Built, LoadFailed, ResizeFailed, Unsupported, build_path
from harness.case.native import Native, model_inputs
from harness.families import Geometry
from harness.spec.cases import Case
from harness.states import DEFAULT_STATE

# set_input_size and dynamic_img_size resample with timm's defaults; at create time the origin's loader may not
AFTER_LOAD_RESAMPLING = ('bicubic', True)


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
