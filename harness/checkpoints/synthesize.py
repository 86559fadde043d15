"""Seeded models whose weights look trained where resizing matters.

timm initialises position embeddings and relative position tables as white noise. Resampling white noise
is meaningless (any interpolation of it is as good as any other), so drift and fidelity figures computed on
it say nothing. Trained embeddings are smooth functions of position; we make them so:

* position embeddings: per channel, a sum of a few random low-frequency 2-D sinusoids over the image
  extent (coordinates normalised to [0, 1], so a rectangular grid is a stretched view of the same field);
* relative position bias tables: per head, a bump that decays with the offset plus a low-frequency ripple
  (Swin's signed-offset tables and LeViT / EfficientViT's absolute-offset ``attention_biases`` alike);
* LayerScale gammas: per channel 0.1 to 0.5, as in trained models (timm's 1e-5 init makes blocks identities);
* NaFlexVit's position tables, stored as the (H, W) grid they cover or as factorized rows and columns: smooth
  fields over their own extent, like ViT's;
* patch-embedding kernels: per (out, in) pair, a low-frequency sinusoid over the patch (Gabor-like).

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
    grid = tuple(model.patch_embed.grid_size) if hasattr(getattr(model, 'patch_embed', None), 'grid_size') else None
    windows = {f'{name}.relative_position_bias_table': module.window_size for name, module in model.named_modules()
               if hasattr(module, 'relative_position_bias_table')}
    for name, param in model.named_parameters():
        if name == 'pos_embed':
            _smooth_pos_embed(param, grid, generator)
        elif name.endswith('patch_embed.proj.weight') and param.shape[-2:].numel() > 1:   # not a 1x1 projection
            param.copy_(_smooth_field(param.shape[:2], param.shape[-2:], generator, max_freq=1.5)
                        * param.std().clamp_min(1e-3))
        elif name in windows:
            _smooth_rel_table(param, tuple(windows[name]), generator)
        elif name.endswith('attention_biases') and _is_offset_table(param):
            _smooth_offset_biases(param, generator)
        elif name.startswith('embeds.pos_embed'):
            _smooth_grid_pos_embed(param, generator)
        elif name.endswith('.gamma') and param.ndim == 1:
            _trained_layer_scale(param, generator)
        else:
            param.add_(torch.randn(param.shape, generator=generator) * PERTURBATION_STD)


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


def _smooth_offset_biases(table: torch.Tensor, generator: torch.Generator) -> None:
    """(heads, S*S) biases by absolute offset (|dy|, |dx|), row-major (LeViT, EfficientViT): per head, a bump
    that decays with the offset's length plus a low-frequency ripple over the S x S offsets."""
    heads, area = table.shape
    side = math.isqrt(area)
    offsets = torch.arange(side, dtype=torch.float32) / max(side - 1, 1)
    dist2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
    width = 0.3 + torch.rand(heads, 1, 1, generator=generator)
    bump = torch.exp(-dist2 / width ** 2) * (1 + torch.rand(heads, 1, 1, generator=generator))
    ripple = _smooth_field((heads,), (side, side), generator, max_freq=1.0) * 0.3 if side > 1 else 0.0
    table.copy_((bump + ripple).reshape(heads, area))


def _trained_layer_scale(gamma: torch.Tensor, generator: torch.Generator) -> None:
    """LayerScale: timm initialises it at 1e-5 (or 1e-6), which makes every block nearly the identity, so a
    class-token head barely sees the patches (nor how their position embedding was resampled); trained
    models' scales are around 0.1 to 1. Per channel, uniform in [0.1, 0.5]."""
    gamma.copy_(0.1 + 0.4 * torch.rand(gamma.shape, generator=generator))


def _is_offset_table(table: torch.Tensor) -> bool:
    return table.ndim == 2 and math.isqrt(table.shape[1]) ** 2 == table.shape[1]


def _smooth_grid_pos_embed(pos_embed: torch.Tensor, generator: torch.Generator) -> None:
    """NaFlexVit's position tables, stored as the grid they cover: (1, H, W, C), or factorized (1, H, C) and
    (1, W, C); each channel a smooth field over the table's extent."""
    grid = tuple(pos_embed.shape[1:-1]) if pos_embed.ndim == 4 else (pos_embed.shape[1], 1)
    field = _smooth_field((pos_embed.shape[-1],), grid, generator, max_freq=2.0)   # (C, *grid)
    pos_embed.copy_(field.permute(1, 2, 0).reshape(pos_embed.shape) * 0.05)


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
