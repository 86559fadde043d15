"""Run one case from checkpoint to judged result: the stages of the harness in order.

checkpoint → native model → build through the case's path → shapes → fidelity → parity → drift → timing
→ verdict. Each stage fills in figures on a :class:`CaseResult`; nothing here decides pass or fail except
the final call to :func:`harness.verdict.judge`.
"""
from __future__ import annotations

import datetime
import platform
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from harness import checks, images
from harness.build import Built, LoadFailed, Unsupported, build_native, build_path
from harness.cases import Case, expectation_for
from harness.checkpoints.store import Checkpoint, CheckpointError, checkpoint_for
from harness.families import Geometry
from harness.matrix import Matrix, TimingConfig
from harness.results import CaseResult
from harness.timing import device_lock, time_forward
from harness.verdict import judge


@dataclass(frozen=True)
class RunOptions:
    device: torch.device
    cache_dir: Path
    timing: TimingConfig


@dataclass
class Native:
    """A checkpoint loaded at its own configuration, its outputs on the image set at its own size, and the
    source weights fidelity resamples (with how far the native load is from them, when they are known)."""
    built: Built
    geometry: Geometry
    outputs: checks.Outputs
    reference: dict[str, torch.Tensor]
    load_diff: checks.TensorDiff | None


class RunContext:
    """State a worker shares between cases: options, the image set, and what is worth computing once.

    The native model is kept for the most recent checkpoint only (xdist keeps a checkpoint's cases on one
    worker, in a row), and the create path's logits for every target of that checkpoint, for parity.
    """

    def __init__(self, matrix: Matrix, options: RunOptions):
        self.matrix = matrix
        self.options = options
        self._images: torch.Tensor | None = None
        self._native_key: tuple | None = None
        self._native: Native | None = None
        self._create_logits: dict[tuple, torch.Tensor | None] = {}

    def inputs(self, model: nn.Module, size: tuple[int, int]) -> torch.Tensor:
        if self._images is None:
            self._images = images.dead_leaves(self.matrix.num_images, self.matrix.seed)
        cfg = getattr(model, 'pretrained_cfg', None) or {}
        batch = images.normalized(images.resized(self._images, size),
                                  cfg.get('mean', (0.485, 0.456, 0.406)), cfg.get('std', (0.229, 0.224, 0.225)))
        return batch.to(self.options.device)

    def native(self, case: Case, checkpoint: Checkpoint) -> Native:
        key = (case.model, case.origin)
        if key != self._native_key:
            self._native_key, self._native, self._create_logits = None, None, {}
            built = build_native(checkpoint)   # raises LoadFailed: nothing is remembered
            model = built.model.to(self.options.device)
            geometry = case.family.geometry(model)
            outputs = checks.forward_outputs(model, self.inputs(model, geometry.img_size))
            loaded = {k: v.cpu() for k, v in model.state_dict().items()}
            reference = checkpoint.reference_state_dict()
            if reference is None:   # hub or user file: the native-size load involves no resampling: it is the source
                self._native = Native(built, geometry, outputs, loaded, None)
            else:
                self._native = Native(built, geometry, outputs, reference, checks.state_dict_diff(loaded, reference))
            self._native_key = key
        return self._native

    def create_logits(self, case: Case, checkpoint: Checkpoint, source: Geometry) -> torch.Tensor | None:
        """The create path's logits for the case's target (None when it does not build)."""
        key = (case.img_size, case.patch_size, case.window_size)
        if key not in self._create_logits:
            try:
                model = build_path('create', checkpoint, case.family, source, case.target).model
            except (LoadFailed, Unsupported):
                self._create_logits[key] = None
            else:
                model = model.to(self.options.device)
                self._create_logits[key] = checks.forward_outputs(model, self.inputs(model, case.img_size)).logits
        return self._create_logits[key]


def run_case(case: Case, case_id: str, ctx: RunContext) -> CaseResult:
    import timm
    result = CaseResult(
        case_id=case_id, matrix=ctx.matrix.name, model=case.model.label, origin=case.origin_label,
        img_size=list(case.img_size), patch_size=case.patch_size, window_size=case.window_size, path=case.path,
        model_name=case.model.name, model_overrides=case.model.kwargs,
        timm_version=timm.__version__, torch_version=torch.__version__, device=ctx.options.device.type,
        device_name=_device_name(ctx.options.device), dtype=ctx.options.timing.dtype,
        batch_size=ctx.options.timing.batch_size)
    started = time.monotonic()
    try:
        model = _checks(case, ctx, result)
        if model is not None and ctx.options.timing.enabled:
            _time(case, model, ctx, result)
        if result.status != 'unsupported':
            judge(result, ctx.matrix.tolerances, expectation_for(case, ctx.matrix, timm.__version__))
    except Unsupported as e:
        result.status, result.reason = 'unsupported', str(e)
    except CheckpointError as e:
        result.status, result.reason = 'error', f'checkpoint: {e}'
    except Exception as e:   # noqa: BLE001 - a harness bug in one case must not lose the others
        result.status = 'error'
        result.reason = f'{type(e).__name__}: {e}\n{traceback.format_exc(limit=-3)}'
    result.duration_s = round(time.monotonic() - started, 3)
    result.finished_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    return result


def _checks(case: Case, ctx: RunContext, result: CaseResult) -> nn.Module | None:
    """Fill in load, shape, fidelity, parity and drift figures; the built model, or None if it did not load."""
    family, device = case.family, ctx.options.device
    checkpoint = checkpoint_for(case.model, case.origin, ctx.matrix.seed, ctx.options.cache_dir)
    with device_lock(ctx.options.cache_dir / 'locks', device, exclusive=False):
        try:
            native = ctx.native(case, checkpoint)
            source = native.geometry
            result.source_img_size = list(source.img_size)
            result.source_patch_size = source.patch_size[0]
            result.source_window_size = source.window_sizes[0][0] if source.window_sizes else None
            built = build_path(case.path, checkpoint, family, source, case.target)
        except LoadFailed as e:
            result.load_error, result.missing_keys, result.unexpected_keys = e.error, e.missing_keys, e.unexpected_keys
            return None
        except checks.ForwardFailed as e:
            result.shape_errors = [f'native size: {e}']
            return None
        result.missing_keys, result.unexpected_keys = built.missing_keys, built.unexpected_keys
        model = built.model.to(device)
        expected = family.expected_geometry(source, case.target)
        try:
            outputs = checks.forward_outputs(model, ctx.inputs(model, case.img_size))
        except checks.ForwardFailed as e:
            result.shape_errors = [str(e)]
            return None

        result.shape_errors = checks.shape_errors(outputs, family.expected_shapes(expected, ctx.matrix.num_images))
        if case.path != 'dynamic':
            result.shape_errors += checks.geometry_errors(family, model, expected)
        _fidelity(case, checkpoint, native, model, expected, outputs, ctx, result)
        if case.path != 'create':
            _parity(outputs, ctx.create_logits(case, checkpoint, source), result)
        result.drift_cosine = checks.mean_cosine(outputs.pooled, native.outputs.pooled)
        result.drift_top1_agreement = checks.top1_agreement(outputs.logits, native.outputs.logits)
    return model


def _fidelity(case: Case, checkpoint: Checkpoint, native: Native, model: nn.Module, expected: Geometry,
              outputs: checks.Outputs, ctx: RunContext, result: CaseResult) -> None:
    """Compare what timm loaded with the harness's own resample of the source checkpoint."""
    if native.load_diff is not None:
        result.native_max_abs_diff, result.native_worst_tensor = native.load_diff.max_abs_diff, native.load_diff.worst
    # at create time the origin's loader resamples (the .npz loader bilinearly); afterwards timm's own
    # set_input_size and dynamic_img_size resample bicubic with antialiasing
    interpolation, antialias = (checkpoint.interpolation, checkpoint.antialias) if case.path == 'create' \
        else ('bicubic', True)
    expected_weights = case.family.resample_state_dict(native.reference, native.geometry, expected, interpolation,
                                                       antialias)
    if case.path == 'dynamic':   # nothing resampled is stored: compare outputs with a model that stores ours
        reference_model = _model_carrying(case, expected_weights).to(ctx.options.device)
        want = checks.forward_outputs(reference_model, ctx.inputs(reference_model, case.img_size))
        result.fidelity_outputs_max_abs_diff = checks.max_abs_diff(outputs.logits, want.logits)
    else:
        diff = checks.state_dict_diff(model.state_dict(), expected_weights)
        result.fidelity_weights_max_abs_diff, result.fidelity_worst_tensor = diff.max_abs_diff, diff.worst


def _model_carrying(case: Case, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    import timm
    model = timm.create_model(case.model.name, pretrained=False,
                              **{**case.model.kwargs, **case.family.create_kwargs(case.target)})
    missing, _ = model.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if not k.endswith(checks.DERIVED_BUFFERS)]
    if missing:
        raise RuntimeError(f'harness reference model lacks {missing[:5]}')
    return model.eval()


def _parity(outputs: checks.Outputs, create_logits: torch.Tensor | None, result: CaseResult) -> None:
    if create_logits is None:
        return   # the create path did not build; its own case reports why
    result.parity_max_abs_diff = checks.max_abs_diff(outputs.logits, create_logits)
    result.parity_cosine = checks.min_cosine(outputs.logits, create_logits)


def _time(case: Case, model: nn.Module, ctx: RunContext, result: CaseResult) -> None:
    with device_lock(ctx.options.cache_dir / 'locks', ctx.options.device, exclusive=True):
        timing = time_forward(model, case.img_size, ctx.options.timing, ctx.options.device)
    result.time_median_ms, result.time_iqr_ms, result.time_min_ms = timing.median_ms, timing.iqr_ms, timing.min_ms
    result.images_per_s, result.peak_memory_mb, result.timing_repeats = \
        timing.images_per_s, timing.peak_memory_mb, timing.repeats


def _device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'{_cpu_model()}, {torch.get_num_threads()} threads'


def _cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
