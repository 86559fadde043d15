"""The numeric checks: each takes models, tensors and expectations and returns figures, never a verdict.

Judging figures against a matrix's tolerances is :mod:`harness.case.verdict`'s job, so the same figures can be
re-judged (or compared across releases) without re-running anything.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.families import Geometry
from harness.families.base import Family

# buffers that are recomputed from the configuration, never loaded: not part of a checkpoint's values
DERIVED_BUFFERS = ('relative_position_index', 'attn_mask')


@dataclass
class Outputs:
    """What one forward pass of a model on a batch produced (kept on CPU, float32)."""
    features_shape: tuple[int, ...]
    logits: torch.Tensor
    pooled: torch.Tensor                                   # pre-logits features, for drift
    intermediate_shapes: list[tuple[int, ...]] | None      # None: the model has no forward_intermediates


@dataclass(frozen=True)
class TensorDiff:
    max_abs_diff: float
    worst: str | None      # the tensor with the largest difference


class ForwardFailed(Exception):
    """The model raised on a forward pass at the case's size; ``error`` is what timm raised."""

    def __init__(self, step: str, shape: tuple[int, ...], error: Exception):
        super().__init__(f'{step} on {shape} raised {type(error).__name__}: {error}')
        self.error = error
        self.step = step

    @property
    def no_head(self) -> bool:
        """A model with no classification head by design: its ``forward_head`` raises NotImplementedError (timm's
        vision encoders for language models, such as Qwen3VitEncoder)."""
        return self.step == 'forward_head' and isinstance(self.error, NotImplementedError)


def forward_outputs(model: nn.Module, inputs: torch.Tensor) -> Outputs:
    """One forward pass in eval mode, without gradients (every module's ``training`` flag put back after: a
    model resized in training mode keeps it): ``forward_intermediates`` where the model has it (it returns the
    final features too, so intermediate shapes cost no second pass), else ``forward_features``; then the head
    on its features. Eval mode makes the outputs a function of the weights and geometry: a training-mode pass
    drops paths at random and normalises with the batch's statistics."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return _forward_outputs(model, inputs)
    finally:
        for module, training in flags:
            module.training = training


def _forward_outputs(model: nn.Module, inputs: torch.Tensor) -> Outputs:
    step, intermediates = 'forward_features', None
    try:
        if hasattr(model, 'forward_intermediates'):
            step = 'forward_intermediates'
            features, per_block = model.forward_intermediates(inputs)
            intermediates = [tuple(t.shape) for t in per_block]
        else:
            features = model.forward_features(inputs)
        step = 'forward_head'
        logits = model.forward_head(features)
        pooled = model.forward_head(features, pre_logits=True)
    except Exception as e:   # noqa: BLE001 - whatever timm raises is the finding (or a machine limit)
        raise ForwardFailed(step, tuple(inputs.shape), e) from e
    return Outputs(tuple(features.shape), logits.float().cpu(), pooled.float().cpu(), intermediates)


def fingerprint(outputs: Outputs, head: int = 8) -> dict[str, Any]:
    """A compact record of what a model computed, for comparing releases (:mod:`harness.analysis.compare`): a digest of
    the logits rounded to 4 decimals (equal digests: the same outputs to that precision), and the figures that
    say how far they moved when digests differ: the first ``head`` logits of each image, and the mean and
    standard deviation of the logits and of the pre-logits features."""
    logits = outputs.logits.double()
    rounded = torch.round(logits, decimals=4) + 0.0   # + 0.0: -0.0 and 0.0 must digest alike
    return {
        'digest': hashlib.sha256(rounded.numpy().tobytes()).hexdigest()[:16],
        'logits_head': [[round(v, 6) for v in row[:head].tolist()] for row in logits],
        'logits_mean': logits.mean().item(), 'logits_std': logits.std().item() if logits.numel() > 1 else 0.0,
        'pre_logits_mean': outputs.pooled.double().mean().item(),
        'pre_logits_std': outputs.pooled.double().std().item() if outputs.pooled.numel() > 1 else 0.0,
    }


def nonfinite(outputs: Outputs) -> list[str]:
    """The outputs holding NaN or Inf."""
    return [name for name, t in (('logits', outputs.logits), ('pre-logits', outputs.pooled))
            if not torch.isfinite(t).all()]


def shape_errors(outputs: Outputs, expected: dict[str, Any]) -> list[str]:
    """Every output whose shape differs from what the target geometry implies."""
    errors = []
    actual = {'forward_features': outputs.features_shape, 'logits': tuple(outputs.logits.shape)}
    if outputs.intermediate_shapes is not None:
        actual['forward_intermediates'] = outputs.intermediate_shapes
    for name, shape in actual.items():
        want = expected[name]
        want = [tuple(s) for s in want] if isinstance(want, list) else tuple(want)
        if shape != want:
            errors.append(f'{name}: got {_fmt(shape)}, expected {_fmt(want)}')
    return errors


def feature_errors(model: nn.Module, img_size: tuple[int, int],
                   intermediate_shapes: list[tuple[int, ...]] | None) -> list[str]:
    """Where the model's ``feature_info`` disagrees with what ``forward_intermediates`` returned at ``img_size``:
    the number of levels, each level's channels (dim 1 of an NCHW map) and its reduction (each side of the map
    is the input's side over the reduction, rounded up as padding and stride-2 steps round). Nothing to judge
    without both (None intermediates: no forward_intermediates), or where feature_info is not a list of levels
    naming ``num_chs`` and ``reduction``."""
    info = getattr(model, 'feature_info', None)
    if not isinstance(info, (list, tuple)) or not info or intermediate_shapes is None \
            or not all(isinstance(level, dict) and {'num_chs', 'reduction'} <= set(level) for level in info):
        return []   # nothing that states channels and reductions per level
    levels = [(level['num_chs'], level['reduction']) for level in info]
    if len(levels) != len(intermediate_shapes):
        return [f'feature_info lists {len(levels)} levels, forward_intermediates returned {len(intermediate_shapes)}']
    errors = []
    for i, ((channels, reduction), shape) in enumerate(zip(levels, intermediate_shapes)):
        if len(shape) != 4:
            continue   # a token sequence (output_fmt NLC) carries no map to measure
        want = (channels, -(-img_size[0] // reduction), -(-img_size[1] // reduction))
        if tuple(shape[1:]) != want:
            got = f'{shape[1]} channels at {shape[2]}x{shape[3]}'
            errors.append(f'level {i}: feature_info says {channels} channels at reduction {reduction} '
                          f'({want[1]}x{want[2]} at {img_size[0]}x{img_size[1]}), forward_intermediates gave {got}')
    return summarised(errors)


def geometry_errors(family: Family, model: nn.Module, expected: Geometry) -> list[str]:
    """The model's stored configuration (patch_embed img_size and grid, windows and shifts) must follow the target."""
    actual = family.geometry(model)
    errors = []
    for name in ('img_size', 'patch_size', 'grid_size', 'window_sizes', 'shift_sizes'):
        got, want = getattr(actual, name), getattr(expected, name)
        if got != want:
            errors.append(f'{name}: stored {_fmt(got)}, expected {_fmt(want)}')
    stored, wanted = dict(actual.rel_pos_windows), dict(expected.rel_pos_windows)
    errors += [f'rel_pos window of {module}: stored {_fmt(stored.get(module))}, expected {_fmt(window)}'
               for module, window in wanted.items() if stored.get(module) != window]
    return errors


def state_dict_diff(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                    strict: bool = False) -> TensorDiff:
    """Largest absolute difference over every tensor the checkpoint determines (shape mismatch: inf), each
    tensor's in its own unit (:func:`own_unit`); ``strict``: a tensor in ``actual`` that ``expected`` lacks is a
    mismatch too (a mask where none belongs)."""
    extra = sorted(set(actual) - set(expected)) if strict else []
    if extra:
        return TensorDiff(float('inf'), extra[0])
    worst, worst_diff = None, 0.0
    for key, want in expected.items():
        if key.endswith(DERIVED_BUFFERS) or not want.is_floating_point():
            continue
        got = actual.get(key)
        if got is None or got.shape != want.shape:
            return TensorDiff(float('inf'), key)
        diff = _max_abs_diff_where_unequal(got.detach().float().cpu(), want.float()) if want.numel() else 0.0
        if math.isnan(diff):
            return TensorDiff(diff, key)   # NaN compares false with everything: it must not hide as "no diff"
        if want.numel():
            diff /= own_unit(want)
        if diff > worst_diff:
            worst, worst_diff = key, diff
    return TensorDiff(worst_diff, worst)


def own_unit(tensor: torch.Tensor) -> float:
    """The power of two at or above the tensor's largest finite magnitude, and at least 1.

    float32 rounds relative to magnitude: a tensor with values up to 16 (Swin-V2's position bias,
    ``16 sigmoid(...)``) carries 16 times the rounding noise of one up to 1 (a pos-embed, a rope). Measured in
    its own unit every tensor has the noise of a value up to 1, so one limit holds them all; dividing by a power
    of two is exact, and a tensor up to 1 is compared as it is."""
    finite = tensor[tensor.isfinite()].abs()
    largest = finite.max().item() if finite.numel() else 0.0
    return 2.0 ** math.ceil(math.log2(largest)) if largest > 1 else 1.0


def _max_abs_diff_where_unequal(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest |got - want| over the elements that differ: a NaN or infinity a checkpoint holds and the load
    kept (a user's file may hold them; finite judges the outputs) is equal to itself, not a difference of NaN;
    a NaN or infinity anywhere else still makes the figure NaN or infinite."""
    same = (got == want) | (got.isnan() & want.isnan())
    return torch.where(same, torch.zeros_like(got), (got - want).abs()).max().item()


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float('inf')
    return (a - b).abs().max().item()


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The lowest per-sample cosine similarity of two (N, D) batches."""
    if a.shape != b.shape:
        return float('nan')
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).min().item()


def mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1).mean().item()


def top1_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.argmax(dim=1) == b.argmax(dim=1)).float().mean().item()


def summarised(items: list[str], shown: int = 6) -> list[str]:
    """The first ``shown`` findings, and how many more there are (a whole model's flags can flip at once)."""
    return items if len(items) <= shown else [*items[:shown], f'... and {len(items) - shown} more']


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return '[' + ', '.join(_fmt(v) for v in value) + ']'
    if isinstance(value, tuple):
        return '(' + ', '.join(str(v) for v in value) + ')'
    return str(value)
