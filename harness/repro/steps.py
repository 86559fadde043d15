"""The steps a repro script runs, as real functions: ``harness repro`` carries the ones a case needs into the
script by their source (:mod:`harness.repro.inline`), so what a script runs is code the harness's tests run.

Since they leave the harness, these functions import nothing but torch, timm and the standard library; work on
every timm release from 0.9 on (a missing API is a :class:`Skip`, never a crash); and take what varies by
case as arguments, so a script's ``main()`` reads as its case. A check prints what it expected and what it
got (:func:`verdict`) and raises :class:`Failed` when it does not hold; :func:`run` turns the outcome into
the exit code ``git bisect run`` understands.
"""
from __future__ import annotations

import contextlib
import copy
import math
import re
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from harness.checkpoints.source import unwrap
from harness.checks import feature_errors, max_abs_diff, mean_cosine, min_cosine, state_dict_diff, top1_agreement
from harness.faults import raised_while_resampling


class Skip(Exception):
    """The case cannot be built or tested on this timm release (exit 125: git bisect's skip)."""


class Failed(Exception):
    """A check did not hold; :func:`verdict` has printed what it expected and what it got."""


def run(main: Callable[[Path], None], recorded: list[str]) -> int:
    """Run ``main`` in a fresh folder; the exit code git bisect run reads (``recorded``: the checks that failed)."""
    print(f'timm {timm.__version__}, torch {torch.__version__}')
    torch.manual_seed(0)
    try:
        with tempfile.TemporaryDirectory() as workdir:
            main(Path(workdir))
    except Failed as e:
        print(f'REPRODUCED: {e} fails' if str(e) in recorded else
              f'FAILED: another check fails: {e} (the harness saw {", ".join(recorded)} fail)')
        return 1
    except Exception as e:   # noqa: BLE001 - a Skip, or this script's own trouble here: no verdict on the case
        print(f'SKIP: {e}' if isinstance(e, Skip) else f'SKIP: cannot run the case here\n{traceback.format_exc()}')
        return 125
    print(f'PASSED: {", ".join(recorded)} held on timm {timm.__version__}')
    return 0


def verdict(check: str, ok: bool, expected: str, got: str) -> None:
    """Print what ``check`` expected and what it got; raise Failed(check) when it did not hold."""
    print(f'{check}: {"ok" if ok else "FAILED"}\n  expected: {expected}\n  got:      {got}')
    if not ok:
        raise Failed(check)


@contextlib.contextmanager
def step(check: str, doing: str, kwargs: dict[str, Any]) -> Iterator[None]:
    """What timm raises in the block fails ``check`` (``resize`` when raised in a timm resampling function).

    An argument of ``kwargs`` that this release does not take is a Skip.
    """
    try:
        yield
    except (Failed, Skip):
        raise
    except Exception as e:   # noqa: BLE001 - whatever timm raises is the finding
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e)) if isinstance(e, TypeError) else None
        if unknown and unknown.group(1) in kwargs:
            raise Skip(f'timm {timm.__version__} does not take {unknown.group(1)}= here') from None
        verdict('resize' if raised_while_resampling(e) else check, False, doing, f'{type(e).__name__}: {e}')


def not_inlined(check: str, family: str) -> None:
    """A check whose oracle this script does not carry: it cannot say whether that failure reproduces."""
    raise Skip(f'the {check} oracle of the {family} family is not inlined in this script, so it cannot tell '
               f'whether {check} still fails (the harness can: harness run)')


# --- step 1: the source checkpoint -----------------------------------------------------------------------------
@torch.no_grad()
def trained_looking(model: nn.Module) -> nn.Module:
    """Weights that look trained: smooth position embeddings, bias tables and patch kernels, the rest perturbed.

    timm initialises embeddings as white noise, and resampled noise says nothing.
    """
    generator = torch.Generator().manual_seed(0)

    def smooth(channels: int, size: tuple[int, int]) -> torch.Tensor:   # (channels, *size): 3x3 noise, upsampled
        noise = torch.randn(channels, 1, 3, 3, generator=generator)
        return F.interpolate(noise, size=tuple(size), mode='bicubic', align_corners=True)[:, 0]

    for name, param in model.named_parameters():
        if name == 'pos_embed':   # (1, prefix + h * w, C): the grid part a smooth field over the grid
            grid = tuple(model.patch_embed.grid_size)
            param[0, param.shape[1] - grid[0] * grid[1]:] = smooth(param.shape[-1], grid).flatten(1).T * 0.05
        elif name.endswith('relative_position_bias_table'):   # ((2h - 1) * (2w - 1) + extra, heads) or per head
            window = model.get_submodule(name.rsplit('.', 1)[0]).window_size
            offsets = (2 * window[0] - 1, 2 * window[1] - 1)
            if param.ndim == 3:   # (heads, 2h - 1, 2w - 1): the TensorFlow MaxViT layout
                param.copy_(smooth(param.shape[0], offsets))
            else:                 # BEiT's three class-token rows, when it has them, follow the offsets
                param[:offsets[0] * offsets[1]] = smooth(param.shape[1], offsets).flatten(1).T
        elif name.endswith('patch_embed.proj.weight'):   # (out, in, h, w)
            param.copy_(smooth(param.shape[0] * param.shape[1], param.shape[-2:]).reshape(param.shape) * 0.02)
        else:
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return model


# --- step 3: the case's path ------------------------------------------------------------------------------------
def pretrained(name: str, kwargs: dict[str, Any], overlay: dict[str, Any] | None) -> nn.Module:
    """``timm.create_model(name, pretrained=True, **kwargs)`` loading the file ``overlay`` names."""
    doing = f'create_model({name!r}, pretrained=True, **{kwargs}) loads the checkpoint'
    with step('load', doing, kwargs):
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).eval()
    verdict('load', True, doing, 'it loads')
    return model


def set_input_size(model: nn.Module, kwargs: dict[str, Any]) -> nn.Module:
    """A copy of ``model`` after ``set_input_size(**kwargs)``."""
    if not hasattr(model, 'set_input_size'):
        raise Skip(f'{type(model).__name__} has no set_input_size in timm {timm.__version__}')
    model = copy.deepcopy(model)
    doing = f'set_input_size(**{kwargs}) resizes the model'
    with step('resize', doing, kwargs):
        model.set_input_size(**kwargs)
    verdict('resize', True, doing, 'it resizes')
    return model


def images(size: tuple[int, int], batch: int = 2) -> torch.Tensor:
    """A fixed batch of smooth, normalised images at ``size``: the same seeded scene at every size."""
    scene = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return (F.interpolate(scene, size=tuple(size), mode='bicubic', antialias=True, align_corners=False) - 0.5) / 0.25


@torch.no_grad()
def forward(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features, logits, pre-logits) of one pass (dynamic_img_size resamples during it)."""
    with step('shapes', f'a forward pass on {tuple(inputs.shape)}', {}):
        features = model.forward_features(inputs)
        return features, model.forward_head(features), model.forward_head(features, pre_logits=True)


# --- step 4: the checks -----------------------------------------------------------------------------------------
def check_shapes(model: nn.Module, outputs: tuple, expected: dict[str, tuple]) -> None:
    """Output shapes (and the stored patch grid, where expected) as the target geometry implies."""
    got = {'forward_features': tuple(outputs[0].shape), 'logits': tuple(outputs[1].shape)}
    if 'grid_size' in expected:
        got['grid_size'] = tuple(getattr(getattr(model, 'patch_embed', None), 'grid_size', ()))
    verdict('shapes', got == expected, str(expected), str(got))


@torch.no_grad()
def check_features(model: nn.Module, inputs: torch.Tensor) -> None:
    """The model's ``feature_info`` (channels and reduction per level) against the maps ``forward_intermediates``
    returns for ``inputs``, as the harness compares them; nothing to judge without forward_intermediates."""
    shapes = None
    if hasattr(model, 'forward_intermediates'):
        with step('features', f'forward_intermediates on {tuple(inputs.shape)}', {}):
            shapes = [tuple(t.shape) for t in model.forward_intermediates(inputs)[1]]
    errors = feature_errors(model, tuple(inputs.shape[-2:]), shapes)
    verdict('features', not errors, 'feature_info as forward_intermediates returns the levels',
            '; '.join(errors) or ('they agree' if shapes is not None else 'no forward_intermediates to compare'))


def check_finite(outputs: tuple) -> None:
    bad = [name for name, t in zip(('logits', 'pre-logits'), outputs[1:]) if not torch.isfinite(t).all()]
    verdict('finite', not bad, 'finite logits and pre-logits', f'NaN or Inf in {" and ".join(bad)}' if bad else
            'finite')


def file_reference(path: str, native: nn.Module) -> dict[str, torch.Tensor]:
    """The user's checkpoint as saved, under timm's names: read without running code from it and unwrapped as
    timm unwraps it; the model's own tensor where the file holds none under its name and shape (another layout,
    which the harness reads back through its layout writers: see the case's reference_note)."""
    if path.endswith('.safetensors'):
        contents = load_file(path)
    elif path.endswith('.npz'):
        with np.load(path, allow_pickle=False) as arrays:
            contents = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    else:
        contents = torch.load(path, map_location='cpu', weights_only=True)
    saved = unwrap(contents)
    return {k: saved[k] if k in saved and saved[k].shape == v.shape else v for k, v in native.state_dict().items()}


def check_weights(check: str, model: nn.Module, expected: dict[str, torch.Tensor], atol: float) -> None:
    """Every tensor of ``model`` within ``atol`` of ``expected`` (a missing or reshaped one is infinitely far).

    ``expected`` is the checkpoint as saved (reload) or the oracle's resample (fidelity); the buffers timm derives
    from the configuration are left out.
    """
    state = model.state_dict()
    diffs = {k: (state[k].float() - v.float()).abs().max().item() if k in state and state[k].shape == v.shape
             else math.inf for k, v in expected.items()
             if v.is_floating_point() and v.numel() and not k.endswith(('relative_position_index', 'attn_mask'))}
    worst = max(diffs, key=lambda k: math.inf if math.isnan(diffs[k]) else diffs[k])
    verdict(check, diffs[worst] <= atol, f'every tensor within {atol:g} of the {check} reference',
            f'{diffs[worst]:.3g}' + (f' in {worst}' if diffs[worst] else ''))


def check_tensors(check: str, actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float,
                  what: str, strict: bool = False) -> None:
    """``actual`` within ``atol`` of ``expected``, each tensor in its own unit, as the harness compares them
    (``strict``: a tensor ``expected`` lacks is a mismatch too)."""
    diff = state_dict_diff(actual, expected, strict)
    verdict(check, diff.max_abs_diff <= atol, f'{what} within {atol:g} of the harness\'s (each in its own unit)',
            f'{diff.max_abs_diff:.3g}' + (f' in {diff.worst}' if diff.worst and diff.max_abs_diff else ''))


def check_forward_tensors(read: Callable[[], dict[str, torch.Tensor]], expected: dict[str, torch.Tensor],
                          atol: float) -> None:
    """The tensors timm's own forward steps compute at the target (``read()``) against the harness's; a step that
    raises on the target's geometry is as far off as can be, as the harness counts it."""
    try:
        actual = read()
    except (RuntimeError, AssertionError) as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        verdict('fidelity', False, 'forward tensors at the target geometry', f'{type(e).__name__}: {message[:200]}')
    check_tensors('fidelity', actual, expected, atol, 'forward tensors', strict=True)


def check_outputs(logits: torch.Tensor, oracle_logits: torch.Tensor, atol: float) -> None:
    """Fidelity of a path that stores nothing resampled (dynamic_img_size): logits against the oracle model's."""
    diff = max_abs_diff(logits, oracle_logits)
    verdict('fidelity', diff <= atol, f'logits within {atol:g} of a model computing the oracle', f'{diff:.3g}')


def carrying(name: str, kwargs: dict[str, Any], weights: dict[str, torch.Tensor]) -> nn.Module:
    """timm's ``name`` built with ``kwargs`` (no pretrained loading), carrying ``weights``, in eval mode."""
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.load_state_dict(weights)
    return model.eval()


def check_parity(logits: torch.Tensor, create_logits: torch.Tensor, atol: float, min_cos: float) -> None:
    diff, cosine = max_abs_diff(logits, create_logits), min_cosine(logits, create_logits)
    verdict('parity', diff <= atol and cosine >= min_cos,
            f'logits within {atol:g} of the create path, per-image cosine >= {min_cos}',
            f'{diff:.3g} apart, cosine {cosine:.6f}')


def check_noop(native: nn.Module, size: tuple[int, int], atol: float) -> None:
    """``set_input_size(img_size=<the model's own size>)`` must move neither its stored geometry nor its logits."""
    try:
        resized = set_input_size(native, {'img_size': size})
    except Failed:
        raise Failed('noop') from None
    before, after = stored_sizes(native), stored_sizes(resized)
    moved = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    diff = max_abs_diff(forward(resized, images(size))[1], forward(native, images(size))[1])
    verdict('noop', not moved and diff <= atol, f'set_input_size(img_size={size}) moves no stored size and logits '
            f'by at most {atol:g}', f'logits moved by {diff:.3g}' + (f'; (before, after): {moved}' if moved else ''))


def stored_sizes(model: nn.Module) -> dict[str, Any]:
    """Every size the model stores (image, grid, window and shift sizes), by module."""
    sizes = {}
    for name, module in model.named_modules():
        for attr in ('img_size', 'grid_size', 'window_size', 'shift_size'):
            value = getattr(module, attr, None)
            if isinstance(value, (int, list, tuple)):
                sizes[f'{name or "model"}.{attr}'] = value if isinstance(value, int) else tuple(value)
    return sizes


def check_drift(pooled: torch.Tensor, logits: torch.Tensor, native_outputs: tuple, min_cos: float | None,
                min_top1: float | None) -> None:
    """The target-size model against the native model at its own size, on the same scene."""
    cosine, top1 = mean_cosine(pooled, native_outputs[2]), top1_agreement(logits, native_outputs[1])
    verdict('drift', (min_cos is None or cosine >= min_cos) and (min_top1 is None or top1 >= min_top1),
            f'pooled-feature cosine >= {min_cos}, top-1 agreement >= {min_top1}',
            f'cosine {cosine:.4f}, top-1 agreement {top1:.2f}')
