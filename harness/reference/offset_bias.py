"""Attention biases indexed by absolute offset (LeViT, EfficientViT-MSRA): the table resized as an image, and
the per-token-pair bias it expands to."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_offset_bias_table(table: Tensor, old_window: int, new_window: int, interpolation: str = 'bicubic',
                               antialias: bool = True) -> Tensor:
    """Resize a ``(heads, old_window ** 2)`` table of attention biases by offset to ``new_window``.

    LeViT's attention within an ``S x S`` window adds one learned bias per head and per *absolute* offset
    ``(|dy|, |dx|)`` between two tokens, both in ``[0, S)``: a table of ``S * S`` entries, row-major in
    ``(|dy|, |dx|)``. It is a ``heads``-channel ``S x S`` image with offset 0 at the top-left corner, and LeViT's
    recipe for a new window (which TinyViT and EfficientViT follow) resizes that image to ``S' x S'`` with
    ``F.interpolate`` (half-pixel centres, ``align_corners=False``). Computed in float32, as the recipe states;
    returns ``table`` itself if the window does not change.
    """
    heads, area = table.shape
    if area != old_window * old_window:
        raise ValueError(f'table of shape {tuple(table.shape)} does not hold {old_window}x{old_window} offsets')
    if old_window == new_window:
        return table
    image = table.float().reshape(1, heads, old_window, old_window)
    image = F.interpolate(image, size=(new_window, new_window), mode=interpolation, antialias=antialias,
                          align_corners=False)
    return image.reshape(heads, new_window * new_window).to(table.dtype)


def offset_bias(table: Tensor, window: int) -> Tensor:
    """The ``(heads, N, N)`` bias attention adds between the ``N = window ** 2`` tokens of a window (row-major):
    entry ``[h, i, j]`` is the table's bias for the offset ``(|y_i - y_j|, |x_i - x_j|)``."""
    heads, area = table.shape
    if area != window * window:
        raise ValueError(f'table of shape {tuple(table.shape)} does not hold {window}x{window} offsets')
    y, x = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    y, x = y.flatten(), x.flatten()
    index = (y[:, None] - y[None, :]).abs() * window + (x[:, None] - x[None, :]).abs()   # (N, N)
    return table[:, index.to(table.device)]
