"""Relative position bias tables: BEiT's geometric-progression interpolation, as timm applies it.

Two layouts hold the same thing, one learned bias per (dy, dx) offset of a window and per head:

* flat, ``((2h - 1) * (2w - 1) + extra, heads)``: Swin, BEiT, timm's ``RelPosBias``; the offsets row-major, then
  ``extra`` rows that are no offset at all (BEiT's class-token rows: class to patch, patch to class, class to
  class), which a resize keeps as they are;
* per head, ``(heads, 2h - 1, 2w - 1)``: the TensorFlow MaxViT release (timm's ``RelPosBiasTf``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_rel_pos_table(table: Tensor, old_window: tuple[int, int], new_window: tuple[int, int],
                           extra_rows: int = 0) -> Tensor:
    """Resize a flat relative position bias table from ``old_window`` to ``new_window``.

    ``table`` is ``((2 * old_h - 1) * (2 * old_w - 1) + extra_rows, num_heads)``: per head, a row-major grid of
    biases indexed by (dy, dx) offset, then ``extra_rows`` rows kept unchanged at the end (BEiT keeps its
    class-token rows). The grid is resampled by :func:`_resample_offsets`. Computed in float64; returns
    ``table`` itself if the window does not change.
    """
    old_size, new_size = _table_size(old_window), _table_size(new_window)
    if table.ndim != 2 or table.shape[0] != old_size[0] * old_size[1] + extra_rows:
        raise ValueError(f'table of shape {tuple(table.shape)} is not a relative position bias table for a '
                         f'{old_window[0]}x{old_window[1]} window' + (f' with {extra_rows} extra rows' if extra_rows
                                                                      else ''))
    if old_size == new_size:
        return table
    offsets, extra = table[:table.shape[0] - extra_rows], table[table.shape[0] - extra_rows:]
    biases = offsets.T.to(torch.float64).reshape(-1, *old_size)   # (heads, old rows, old cols)
    resized = _resample_offsets(biases, new_size).flatten(1).T.to(table.dtype)
    return torch.cat([resized, extra]) if extra_rows else resized


def resample_rel_pos_grid(table: Tensor, old_window: tuple[int, int], new_window: tuple[int, int]) -> Tensor:
    """Resize a per-head ``(heads, 2h - 1, 2w - 1)`` table (TensorFlow MaxViT's layout) from ``old_window`` to
    ``new_window``, as :func:`resample_rel_pos_table` resizes a flat one."""
    old_size, new_size = _table_size(old_window), _table_size(new_window)
    if table.ndim != 3 or tuple(table.shape[1:]) != old_size:
        raise ValueError(f'table of shape {tuple(table.shape)} is not a per-head relative position bias table for '
                         f'a {old_window[0]}x{old_window[1]} window')
    if old_size == new_size:
        return table
    return _resample_offsets(table.to(torch.float64), new_size).to(table.dtype)


def _table_size(window: tuple[int, int]) -> tuple[int, int]:
    return 2 * window[0] - 1, 2 * window[1] - 1


def _resample_offsets(biases: Tensor, new_size: tuple[int, int]) -> Tensor:
    """``(heads, rows, cols)`` biases over offsets, resampled to ``new_size`` offsets per axis.

    The algorithm is BEiT's, as timm applies it: along each axis the old offsets are placed on a geometric
    progression (``_progression_offsets``), the new offsets on the integers, and each head is interpolated
    bilinearly on that non-uniform grid, holding the edge values beyond it (``_linear_weights``). Bilinear
    interpolation on a rectilinear grid is separable, so per head it is ``W_y @ bias @ W_x^T``.
    """
    weights_y, weights_x = (
        _linear_weights(_progression_offsets(old, new), _uniform_offsets(new)).to(biases.device)
        for old, new in zip(biases.shape[1:], new_size))
    return weights_y @ biases @ weights_x.T


def _progression_offsets(src: int, dst: int) -> Tensor:
    """Where BEiT places the ``src`` old offsets of one axis when resizing it to ``dst`` offsets.

    The offsets ``1, 2, ...`` become the partial sums ``1, 1 + q, 1 + q + q^2, ...`` (mirrored for negative
    offsets), with ratio ``q`` found by bisection on ``[1.01, 1.5]`` so that the largest lands on the
    largest new offset ``dst // 2``. The bisection is BEiT's to the letter: stop once the bracket is under
    1e-6 and take its last midpoint. A ratio that would have to lie outside the bracket is pinned near its
    bound: an axis that shrinks or keeps its size still gets ``q ~ 1.01`` (a slight resampling, not a crop
    or the identity), and one that grows too far gets ``q ~ 1.5`` and falls short of the new outer offsets.
    """
    half = src // 2
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** half) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    positive = torch.tensor([q ** i for i in range(half)], dtype=torch.float64).cumsum(0)
    return torch.cat([-positive.flip(0), torch.zeros(1, dtype=torch.float64), positive])


def _uniform_offsets(size: int) -> Tensor:
    """The offsets ``-(size // 2) .. size // 2`` of one axis of a table with ``size`` (odd) entries."""
    return torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)


def _linear_weights(nodes: Tensor, points: Tensor) -> Tensor:
    """``(len(points), len(nodes))`` weights of piecewise-linear interpolation at ``points``.

    ``nodes`` is increasing and need not be evenly spaced; points beyond it take the nearest edge value.
    """
    points = points.clamp(nodes[0], nodes[-1])
    left = (torch.searchsorted(nodes, points, right=True) - 1).clamp(0, len(nodes) - 1)
    right = (left + 1).clamp(max=len(nodes) - 1)
    span = nodes[right] - nodes[left]
    frac = torch.where(span > 0, (points - nodes[left]) / span, 0.0)  # span is 0 only where left == right
    return (1 - frac)[:, None] * F.one_hot(left, len(nodes)) + frac[:, None] * F.one_hot(right, len(nodes))
