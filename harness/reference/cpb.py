"""Continuous position bias (Swin-V2): relative coordinates, log-spaced, fed through a small MLP.

Swin-V2 stores no bias table to resample. Each window attention holds an MLP from a relative offset
``(dy, dx)`` to one bias per head, and its coordinates are recomputed for whatever window the block has, so
resizing is right when the coordinates are right for the new window and the checkpoint's MLP is applied to
them. Two variants, both from the paper (https://arxiv.org/abs/2111.09883, Sec. 3.3):

* Swin-V2 (Microsoft's release, :func:`log_spaced_table`, :func:`v2_position_bias`): one coordinate per
  distinct offset, each axis normalised by the pretrained window (or the window itself) to [-8, 8] and
  log-spaced as ``sign(t) log2(1 + |t|) / log2(8)``; the bias is ``16 sigmoid(MLP)``, looked up per token pair;
* Swin-V2-CR (Christoph Reich's, :func:`log_pair_coords`, :func:`cr_position_bias`): one coordinate per
  token pair, not normalised, ``sign(d) ln(1 + |d|)``; the bias is the MLP's output as it is.

Everything is computed in float64 from the window, never read off a model: a rectangular window is two
independent axes, and nothing here assumes it square.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def pair_offsets(window: tuple[int, int]) -> Tensor:
    """``(area, area, 2)`` offsets ``(y_i - y_j, x_i - x_j)`` between the window's tokens, row-major."""
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing='ij')
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=-1)    # (area, 2)
    return coords[:, None, :] - coords[None, :, :]


def log_spaced_table(window: tuple[int, int], pretrained_window: tuple[int, int] = (0, 0)) -> Tensor:
    """Swin-V2's ``(1, 2h - 1, 2w - 1, 2)`` table of log-spaced coordinates, one per distinct offset.

    Offset ``d`` along an axis is divided by ``pretrained - 1`` when the model names a pretrained window
    (timm's ``pretrained_window_sizes``, so a window grown for fine-tuning keeps the scale it was trained
    with), else by ``window - 1``; a one-wide axis has only offset 0, which stays 0. Then ``t = 8 d / n`` and
    the coordinate is ``sign(t) log2(1 + |t|) / log2(8)``.
    """
    scale = pretrained_window if pretrained_window[0] > 0 else window
    axes = []
    for size, norm in zip(window, scale):
        offsets = torch.arange(-(size - 1), size, dtype=torch.float64)
        axes.append(offsets * 8 / max(norm - 1, 1))
    grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)   # (2h - 1, 2w - 1, 2)
    return (torch.sign(grid) * torch.log2(grid.abs() + 1) / math.log2(8))[None]


def v2_position_bias(table: Tensor, window: tuple[int, int], first_weight: Tensor, first_bias: Tensor,
                     last_weight: Tensor) -> Tensor:
    """``(heads, area, area)``: Swin-V2's bias between every pair of the window's tokens.

    The MLP is ``Linear(2, hidden) -> ReLU -> Linear(hidden, heads, bias=False)`` on each offset's
    coordinates; the pair ``(i, j)`` takes the value at offset ``(y_i - y_j, x_i - x_j)``, squashed to
    ``(0, 16)`` by ``16 sigmoid``.
    """
    per_offset = _relu_mlp(table[0].to(torch.float64), first_weight, first_bias, last_weight, None)
    offsets = pair_offsets(window)
    per_pair = per_offset[offsets[..., 0] + window[0] - 1, offsets[..., 1] + window[1] - 1]   # (area, area, heads)
    return 16 * torch.sigmoid(per_pair.permute(2, 0, 1))


def log_pair_coords(window: tuple[int, int]) -> Tensor:
    """Swin-V2-CR's ``(area * area, 2)`` coordinates, one per token pair ``(i, j)`` in row-major order of
    ``i`` then ``j``: ``sign(d) ln(1 + |d|)`` of the offset ``d = (y_i - y_j, x_i - x_j)``."""
    offsets = pair_offsets(window).reshape(-1, 2).to(torch.float64)
    return torch.sign(offsets) * torch.log1p(offsets.abs())


def cr_position_bias(coords: Tensor, window: tuple[int, int], first_weight: Tensor, first_bias: Tensor,
                     last_weight: Tensor, last_bias: Tensor) -> Tensor:
    """``(heads, area, area)``: Swin-V2-CR's bias, the MLP ``Linear -> ReLU -> Linear`` on each pair's
    coordinates, as it is."""
    area = window[0] * window[1]
    per_pair = _relu_mlp(coords.to(torch.float64), first_weight, first_bias, last_weight, last_bias)
    return per_pair.T.reshape(-1, area, area)


def _relu_mlp(x: Tensor, first_weight: Tensor, first_bias: Tensor, last_weight: Tensor,
              last_bias: Tensor | None) -> Tensor:
    hidden = torch.relu(x @ first_weight.to(torch.float64).T + first_bias.to(torch.float64))
    out = hidden @ last_weight.to(torch.float64).T
    return out if last_bias is None else out + last_bias.to(torch.float64)
