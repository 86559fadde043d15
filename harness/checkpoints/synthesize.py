"""Seeded models whose weights look trained where resizing matters.

timm initialises position embeddings and relative position tables as white noise. Resampling white noise
is meaningless (any interpolation of it is as good as any other), so drift and fidelity figures computed on
it say nothing. Trained embeddings are smooth functions of position; we make them so:

* position embeddings: per channel, a sum of a few random low-frequency 2-D sinusoids over the image
  extent (coordinates normalised to [0, 1], so a rectangular grid is a stretched view of the same field);
* relative position bias tables: per head, a bump that decays with the offset plus a low-frequency ripple;
* patch-embedding kernels: per (out, in) pair, a low-frequency sinusoid over the patch (Gabor-like);
* models with a rotary position embedding (:func:`_rope_trained_like`): attention peaky enough for the rotation
  to matter, and RoPE-Mixed's learned frequencies spread in magnitude and direction.

Every other parameter gets a small seeded perturbation, so no two tensors are equal (LayerNorm weights
are not all ones): a layout writer that swaps two keys cannot pass its round-trip test by accident.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

PERTURBATION_STD = 0.02


def seeded_model(model_name: str, kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A timm model at its own configuration with reproducible, trained-looking weights, in eval mode."""
    import timm
    torch.manual_seed(seed)
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    make_trained_like(model, torch.Generator().manual_seed(seed))
    return model.eval()


@torch.no_grad()
def make_trained_like(model: nn.Module, generator: torch.Generator) -> None:
    grid = tuple(model.patch_embed.grid_size) if hasattr(model, 'patch_embed') else None
    windows = {f'{name}.relative_position_bias_table': module.window_size for name, module in model.named_modules()
               if hasattr(module, 'relative_position_bias_table')}
    for name, param in model.named_parameters():
        if name == 'pos_embed':
            _smooth_pos_embed(param, grid, generator)
        elif name.endswith('patch_embed.proj.weight'):
            param.copy_(_smooth_field(param.shape[:2], param.shape[-2:], generator, max_freq=1.5)
                        * param.std().clamp_min(1e-3))
        elif name in windows:
            _smooth_rel_table(param, tuple(windows[name]), generator)
        else:
            param.add_(torch.randn(param.shape, generator=generator) * PERTURBATION_STD)
    if getattr(model, 'rope', None) is not None:
        _rope_trained_like(model, generator)


ROPE_LOGIT_STD = 5.0   # spread of a rope model's attention logits: trained attention is peaky, not uniform
LAYER_SCALES = ('gamma_1', 'gamma_2', '.gamma')   # Eva's layer-scale parameters, and timm's LayerScale


def _rope_trained_like(model: nn.Module, generator: torch.Generator) -> None:
    """A rotary embedding acts only through attention logits ``q . R(p_n - p_m) k``: with timm's initialisation
    (projections of std 0.02) the logits are near zero and attention near uniform, so any rope at all, right or
    wrong (axes swapped, a rectangular grid read as square), gives the same outputs. Trained models attend
    sharply (:func:`_peaky_attention`), what their blocks compute reaches the logits (layer scales, 1e-5 at
    init, drawn from [0.3, 0.7]; :func:`_unit_spread_logits`), and RoPE-Mixed's learned frequencies differ per
    block, head and pair (:func:`_spread_mixed_freqs`); so do these."""
    for module in model.modules():
        _peaky_attention(module, generator)
    for name, param in model.named_parameters():
        if name.endswith(LAYER_SCALES):
            param.copy_(0.3 + 0.4 * torch.rand(param.shape, generator=generator))
    freqs = getattr(model.rope, 'freqs', None)
    if isinstance(freqs, nn.Parameter):
        _spread_mixed_freqs(freqs, generator)
    _unit_spread_logits(model, generator)


def _peaky_attention(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw an attention's query and key projections so its logits spread by about ``ROPE_LOGIT_STD``: for
    unit-variance inputs of width C, weights of std ``sqrt(ROPE_LOGIT_STD / C)``; behind a q/k norm, which undoes
    any weight scale, the norms' gains ``sqrt(ROPE_LOGIT_STD)``. Anything that is not an attention is left alone."""
    projections = _query_key_weights(module)
    if projections is None:
        return
    norms = [norm for norm in (getattr(module, 'q_norm', None), getattr(module, 'k_norm', None))
             if getattr(norm, 'weight', None) is not None]
    for weight in projections:
        std = 1.0 if norms else math.sqrt(ROPE_LOGIT_STD / weight.shape[1])
        weight.copy_(torch.randn(weight.shape, generator=generator) * std)
    for norm in norms:
        norm.weight.fill_(math.sqrt(ROPE_LOGIT_STD))


def _spread_mixed_freqs(freqs: torch.Tensor, generator: torch.Generator) -> None:
    """RoPE-Mixed's ``(2, depth, heads, head_dim / 2)`` frequencies: timm initialises one rotation per head of a
    fixed ladder of magnitudes; each (block, head, pair) gets its own direction and a log-normal spread of the
    ladder's magnitude instead, so that exchanging the two axes changes every angle."""
    magnitude = freqs.norm(dim=0) * torch.exp(0.3 * torch.randn(freqs.shape[1:], generator=generator))
    direction = torch.rand(freqs.shape[1:], generator=generator) * 2 * math.pi
    freqs.copy_(torch.stack([magnitude * direction.cos(), magnitude * direction.sin()]))


def _unit_spread_logits(model: nn.Module, generator: torch.Generator) -> None:
    """Rescale the classifier so that the logits of noise images at the model's own size spread by about 1: timm
    scales its initial head by 1e-3, and pooling heads of 0.02-std weights (an attention pool) shrink the
    features further, so what the blocks compute would hardly reach the logits the checks compare."""
    head = model.get_classifier() if hasattr(model, 'get_classifier') else None
    if not isinstance(head, nn.Linear):
        return
    images = torch.randn(2, model.patch_embed.proj.in_channels, *model.patch_embed.img_size, generator=generator)
    training = model.training
    spread = model.eval()(images).std().clamp_min(1e-6)
    model.train(training)
    for param in head.parameters():
        param.div_(spread)


def _query_key_weights(attention: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Views of an attention module's query and key projection weights (fused ``qkv``, ``q_proj``/``k_proj``, or
    an attention pool's ``q``/``kv``), or None for a module that is not an attention."""
    if not hasattr(attention, 'head_dim'):
        return None
    qkv, q_proj, k_proj, q, kv = (getattr(attention, name, None) for name in ('qkv', 'q_proj', 'k_proj', 'q', 'kv'))
    if isinstance(qkv, nn.Linear):
        return qkv.weight.chunk(3)[:2]
    if isinstance(q_proj, nn.Linear) and isinstance(k_proj, nn.Linear):
        return q_proj.weight, k_proj.weight
    if isinstance(q, nn.Linear) and isinstance(kv, nn.Linear):
        return q.weight, kv.weight.chunk(2)[0]
    return None


def _smooth_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], generator: torch.Generator) -> None:
    """Fill the grid part of (1, prefix + H*W, C) with a smooth field; prefix positions stay random."""
    channels = pos_embed.shape[-1]
    num_grid = grid[0] * grid[1]
    prefix = pos_embed.shape[1] - num_grid
    field = _smooth_field((channels,), grid, generator, max_freq=2.0)   # (C, H, W)
    pos_embed[0, prefix:] = field.flatten(1).T * 0.05
    pos_embed[0, :prefix] = torch.randn(prefix, channels, generator=generator) * PERTURBATION_STD


def _smooth_rel_table(table: torch.Tensor, window: tuple[int, int], generator: torch.Generator) -> None:
    """(2Wh-1)*(2Ww-1) x heads table: a decaying bump around offset 0 plus a low-frequency ripple."""
    heads = table.shape[1]
    rows, cols = 2 * window[0] - 1, 2 * window[1] - 1
    dist2 = torch.linspace(-1, 1, rows)[:, None] ** 2 + torch.linspace(-1, 1, cols)[None, :] ** 2
    width = 0.3 + torch.rand(heads, 1, 1, generator=generator)
    bump = torch.exp(-dist2 / width ** 2) * (1 + torch.rand(heads, 1, 1, generator=generator))
    ripple = _smooth_field((heads,), (rows, cols), generator, max_freq=1.0) * 0.3
    table.copy_((bump + ripple).flatten(1).T)


def _smooth_field(batch_shape: tuple[int, ...], size: tuple[int, int], generator: torch.Generator,
                  max_freq: float, terms: int = 3) -> torch.Tensor:
    """Unit-variance sums of ``terms`` random 2-D sinusoids with at most ``max_freq`` cycles per side."""
    h, w = size
    y = (torch.arange(h) + 0.5) / h
    x = (torch.arange(w) + 0.5) / w
    shape = (*batch_shape, terms, 1, 1)
    fy = (torch.rand(shape, generator=generator) * 2 - 1) * max_freq
    fx = (torch.rand(shape, generator=generator) * 2 - 1) * max_freq
    phase = torch.rand(shape, generator=generator) * 2 * math.pi
    amp = torch.randn(shape, generator=generator)
    waves = amp * torch.sin(2 * math.pi * (fy * y[:, None] + fx * x[None, :]) + phase)
    field = waves.sum(dim=-3)
    return field / field.flatten(-2).std(dim=-1).clamp_min(1e-6)[..., None, None]
