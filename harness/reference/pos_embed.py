"""Absolute position embeddings: the token grid resized as an image."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                       num_prefix_tokens: int, interpolation: str = 'bicubic', antialias: bool = True,
                       align_corners: bool = False) -> Tensor:
    """Resize an absolute position embedding from ``old_grid`` to ``new_grid`` tokens.

    ``pos_embed`` is ``(1, num_prefix_tokens + old_h * old_w, C)``: prefix tokens (class, registers) are kept
    as they are; the rest, in row-major order, is treated as a ``C``-channel ``old_h x old_w`` image, resized
    with ``F.interpolate`` in float32 (half-pixel centres unless ``align_corners``) and flattened back. Returns
    ``pos_embed`` itself if the grids are equal.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.ndim != 3 or pos_embed.shape[:2] != (1, expected):
        raise ValueError(f'pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix '
                         f'tokens and a {old_grid[0]}x{old_grid[1]} grid')
    if old_grid == new_grid:
        return pos_embed
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    image = tokens.float().reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=new_grid, mode=interpolation, antialias=antialias, align_corners=align_corners)
    tokens = image.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, tokens], dim=1)
