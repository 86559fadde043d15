"""The states a model is resized in (a matrix's ``states:`` axis), and what a resize must leave of them.

Every case of the other axes resizes an fp32 model in eval mode. Users resize models in other states, and timm
had bugs in exactly those: a half-precision model crashed in ``set_input_size`` (a float32 tensor re-measuring a
hybrid's CNN, a float32 patch projection or position-bias table rebuilt), and a frozen model came out trainable
again (resized tensors with ``requires_grad=True``, a frozen BatchNorm back in training mode). A state is applied
to the model before it is resized (:func:`apply_state`); what the model was in it is snapshotted then
(:func:`snapshot`), and the ``dtype`` and ``trainable`` checks compare the snapshot after the resize with it.

- ``fp32``: as loaded (the default; case ids do not name it);
- ``bf16``, ``fp16``: the model cast to the dtype (weights, buffers and inputs); limits are raised to its
  precision (:func:`scaled_tolerances`);
- ``frozen``: training mode, every parameter ``requires_grad=False`` and every normalisation layer in eval mode,
  as a backbone is frozen for fine-tuning a head;
- ``train``: training mode, parameters trainable as loaded.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.checks import summarised
from harness.noise_floors import MULTIPLE
from harness.store.case_result import (
    DEFAULT_STATE,
    STATES,  # torch-free there: harness.spec.matrix reads them without torch
)

DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# normalisation layers a frozen backbone keeps in eval mode: torch's, and every class of timm's norm modules
# (most subclass torch's; RmsNorm and SimpleNorm do not)
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
TIMM_NORM_MODULES = ('timm.layers.norm', 'timm.layers.norm_act')
# the tolerances that compare numbers the state's dtype computed (reload compares the fp32 load: not scaled)
SCALED_TOLERANCES = ('noop_atol', 'fidelity_weights_atol', 'fidelity_outputs_atol', 'parity_atol')
SCALED_COSINES = ('parity_min_cosine',)


def casts(state: str) -> bool:
    """Whether the state computes in a dtype other than float32 (its figures carry that dtype's noise)."""
    return dtype_of(state) != torch.float32


def dtype_of(state: str) -> torch.dtype:
    """The dtype a state's model computes in (float32 for the states that do not cast)."""
    return DTYPES.get(state, torch.float32)


def apply_state(model: nn.Module, state: str) -> nn.Module:
    """``model`` (in place, and returned) put in ``state``, as a user would before resizing it."""
    if state in ('bf16', 'fp16'):
        model.to(DTYPES[state])
    elif state == 'frozen':
        model.train()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for module in model.modules():
            if isinstance(module, NORM_LAYERS) or type(module).__module__ in TIMM_NORM_MODULES:
                module.eval()
    elif state == 'train':
        model.train()
    elif state != DEFAULT_STATE:
        raise ValueError(f'unknown state {state!r}; expected one of {list(STATES)}')
    return model


@dataclass(frozen=True)
class Snapshot:
    """What a resize must not change: each tensor's dtype and device, each parameter's ``requires_grad``, each
    module's ``training`` flag, by name."""
    tensors: dict[str, tuple[torch.dtype, str]]
    requires_grad: dict[str, bool]
    training: dict[str, bool]
    dtype: torch.dtype        # the model's floating dtype: what a tensor the resize adds must have
    device: str


def snapshot(model: nn.Module, state: str) -> Snapshot:
    """What ``model``, put in ``state``, is before its resize."""
    tensors = {name: (t.dtype, str(t.device)) for name, t in (*model.named_parameters(), *model.named_buffers())}
    device = next((d for _, d in tensors.values()), 'cpu')
    return Snapshot(tensors, {name: p.requires_grad for name, p in model.named_parameters()},
                    {name or '<model>': m.training for name, m in model.named_modules()}, dtype_of(state), device)


def dtype_changes(before: Snapshot, model: nn.Module) -> list[str]:
    """Every parameter and buffer whose dtype or device is not what it was before the resize; a tensor the
    resize added must have the model's floating dtype (when floating) and device."""
    changes = []
    for name, t in (*model.named_parameters(), *model.named_buffers()):
        dtype, device = before.tensors.get(name, (before.dtype if t.is_floating_point() else t.dtype, before.device))
        if t.dtype != dtype:
            changes.append(f'{name} is {_dtype(t.dtype)}, was {_dtype(dtype)}')
        if str(t.device) != device:
            changes.append(f'{name} is on {t.device}, was on {device}')
    return summarised(changes)


def trainable_changes(before: Snapshot, model: nn.Module) -> list[str]:
    """Every parameter whose ``requires_grad`` and every module whose ``training`` flag is not what it was before
    the resize. A parameter the resize added (a rebuilt projection) must have the flag every parameter had, when
    they agreed."""
    flags = set(before.requires_grad.values())
    uniform = flags.pop() if len(flags) == 1 else None
    changes = []
    for name, p in model.named_parameters():
        was = before.requires_grad.get(name, uniform)
        if was is not None and p.requires_grad != was:
            changes.append(f'{name}.requires_grad is {p.requires_grad}, was {was}')
    for name, m in model.named_modules():
        was = before.training.get(name or '<model>')
        if was is not None and m.training != was:
            changes.append(f'{name or "<model>"} ({type(m).__name__}).training is {m.training}, was {was}')
    return summarised(changes)


@functools.lru_cache(maxsize=None)
def device_problem(state: str, device_type: str) -> str | None:
    """Why ``state`` cannot run on ``device_type`` (None: it can): a dtype whose kernels for the operations a
    forward pass uses (convolution, linear, layer norm, softmax, attention) torch lacks on that device. Found by
    running each once on a tiny tensor. (timm resamples tables in float32 and casts back: a kernel that exists
    only in float32, such as antialiased bicubic interpolation on the CPU, does not stop a state.)"""
    dtype = dtype_of(state)
    if dtype == torch.float32:
        return None
    x = torch.ones(1, 2, 4, 4, dtype=dtype, device=device_type)
    operations = {
        'conv2d': lambda: F.conv2d(x, torch.ones(2, 2, 1, 1, dtype=dtype, device=device_type)),
        'linear': lambda: F.linear(x, torch.ones(3, 4, dtype=dtype, device=device_type)),
        'layer_norm': lambda: F.layer_norm(x, (4,)),
        'softmax': lambda: x.softmax(-1),
        'scaled_dot_product_attention': lambda: F.scaled_dot_product_attention(x, x, x),
    }
    for name, operation in operations.items():
        try:
            operation()
        except (RuntimeError, NotImplementedError) as e:
            return f'torch has no {state} {name} on {device_type} ({type(e).__name__}: {str(e).splitlines()[0]})'
    return None


def unit_roundoff(state: str) -> float:
    """Half the machine epsilon of the state's dtype: the largest relative error of one rounding (float32 2^-24,
    bf16 2^-8, fp16 2^-11)."""
    return torch.finfo(dtype_of(state)).eps / 2


def scaled_tolerances(tol, state: str):
    """``tol`` (a resolved :class:`harness.spec.matrix.Tolerances`) for a case computed in ``state``'s dtype.

    A float32 limit is at least :data:`harness.noise_floors.MULTIPLE` float32 roundings (its resolution, the
    float32 unit roundoff); a dtype that rounds coarser moves that resolution to its own unit roundoff: each limit
    on numbers the dtype holds or computes is at least ``MULTIPLE`` roundings of the dtype (bf16 10 x 2^-8 =
    0.039, fp16 10 x 2^-11 = 0.0049; a cosine's distance from 1 likewise). Measured on timm 1.0.31 (CPU): over
    ``matrices/states.yaml`` bf16 moves resampled tables by up to 4.8e-3 in the tensor's own unit (about one
    rounding) and logits by up to 7.8e-3; fp16 (a tiny ViT and Swin) by 2.4e-4 and 4.9e-4 (README, "Model
    states"). ``reload`` compares the float32 load and is not scaled."""
    if not casts(state):
        return tol
    resolution = MULTIPLE * unit_roundoff(state)
    changed = {name: max(getattr(tol, name), resolution) for name in SCALED_TOLERANCES if _limit(getattr(tol, name))}
    changed |= {name: min(getattr(tol, name), 1.0 - resolution) for name in SCALED_COSINES
                if _limit(getattr(tol, name))}
    return dataclasses.replace(tol, **changed)


def _limit(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix('torch.')
