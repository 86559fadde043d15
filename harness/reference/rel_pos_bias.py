"""The attention bias a relative-position module adds at a window: from a table, or from an MLP of coordinates.

Attention within a ``h x w`` window (row-major tokens, an optional class token first) adds, per head, a bias
``B[q, k]`` that depends only on the offset between query ``q`` and key ``k``. Three definitions, each written
from its paper or release:

* :func:`flat_table_bias`: Swin and BEiT index a flat table by the offset ``q - k``; BEiT's class token takes
  three more rows (class to patch, patch to class, class to class);
* :func:`per_head_table_bias`: the TensorFlow MaxViT release indexes a ``(heads, 2h - 1, 2w - 1)`` table by
  ``k - q`` (its one-hot lookups ``1{m - n + max = v}``);
* :func:`mlp_bias`: Swin V2's continuous position bias, an MLP of log-spaced offsets (:func:`log_offsets`),
  which is what lets it move to a window it was not trained on: the MLP is evaluated at the new offsets.

Each returns ``(heads, N, N)`` in float64, ``N`` the window's tokens plus any class token.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def window_offsets(window: tuple[int, int]) -> Tensor:
    """``(area, area, 2)``: the (dy, dx) offset ``q - k`` between every query and key token of the window."""
    ys, xs = torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing='ij')
    coords = torch.stack([ys.flatten(), xs.flatten()], dim=-1)   # (area, 2), row-major
    return coords[:, None, :] - coords[None, :, :]


def flat_table_bias(table: Tensor, window: tuple[int, int], prefix_tokens: int = 0) -> Tensor:
    """The bias of a flat ``((2h - 1) * (2w - 1) + 3 * prefix_tokens, heads)`` table at ``window``.

    Offset ``(dy, dx)`` is row ``(dy + h - 1) * (2w - 1) + dx + w - 1``. With a class token (BEiT), the row
    after the offsets biases the class token's attention to every token (and to itself, unless overridden),
    the next every token's attention to the class token, the last the class token's attention to itself.
    """
    offsets = window_offsets(window)
    rows = (offsets[..., 0] + window[0] - 1) * (2 * window[1] - 1) + offsets[..., 1] + window[1] - 1
    if prefix_tokens:
        if prefix_tokens != 1:
            raise ValueError('a flat relative position table holds rows for one class token at most')
        offset_rows = (2 * window[0] - 1) * (2 * window[1] - 1)
        rows = torch.nn.functional.pad(rows, [1, 0, 1, 0])
        rows[0, :] = offset_rows
        rows[:, 0] = offset_rows + 1
        rows[0, 0] = offset_rows + 2
    return table.to(torch.float64)[rows].permute(2, 0, 1)


def per_head_table_bias(table: Tensor, window: tuple[int, int]) -> Tensor:
    """The bias of a per-head ``(heads, 2h - 1, 2w - 1)`` table at ``window``: ``B[q, k] = T[k - q + (h - 1, w - 1)]``
    (the TensorFlow MaxViT release's lookup, which counts offsets from the query to the key)."""
    reverse = -window_offsets(window)
    return table.to(torch.float64)[:, reverse[..., 0] + window[0] - 1, reverse[..., 1] + window[1] - 1]


def log_offsets(window: tuple[int, int], mode: str, pretrained_window: tuple[int, int] = (0, 0)) -> Tensor:
    """``(2h - 1, 2w - 1, 2)``: every (dy, dx) offset of the window, log-spaced, as the MLP's input.

    ``swin`` (Swin V2, eq. 4): offsets divided by the pretraining window's ``size - 1`` (the window's own when
    none is given), times 8, then ``sign(d) * log2(1 + |d|) / log2(8)``; ``cr`` (timm's): ``sign(d) * ln(1 + |d|)``
    of the plain offsets, so a larger window only adds offsets further out.
    """
    axes = [torch.arange(-(size - 1), size, dtype=torch.float64) for size in window]
    grid = torch.stack(torch.meshgrid(*axes, indexing='ij'), dim=-1)
    if mode == 'cr':
        return torch.sign(grid) * torch.log1p(grid.abs())
    if mode != 'swin':
        raise ValueError(f'unknown log-coordinate mode {mode!r}')
    scale = torch.tensor([(p if p > 0 else w) - 1 for p, w in zip(pretrained_window, window)], dtype=torch.float64)
    grid = grid / scale * 8
    return torch.sign(grid) * torch.log2(1 + grid.abs()) / math.log2(8)


def mlp_bias(layers: list[tuple[Tensor, Tensor | None]], window: tuple[int, int], mode: str,
             pretrained_window: tuple[int, int] = (0, 0), prefix_tokens: int = 0) -> Tensor:
    """The bias of a continuous position bias MLP at ``window``.

    ``layers`` are the MLP's two linear layers, ``(weight, bias or None)``, with a ReLU between them; its
    ``heads`` outputs at each log-spaced offset form a table indexed by ``q - k`` as a flat table is. Swin V2
    bounds the bias as ``16 * sigmoid``; ``cr`` leaves it as it is. A class token gets no bias (zeros).
    """
    (w1, b1), (w2, b2) = [(w.to(torch.float64), None if b is None else b.to(torch.float64)) for w, b in layers]
    hidden = torch.relu(_linear(log_offsets(window, mode, pretrained_window), w1, b1))
    table = _linear(hidden, w2, b2).flatten(0, 1)            # ((2h - 1) * (2w - 1), heads)
    bias = flat_table_bias(table, window)
    if mode == 'swin':
        bias = 16 * torch.sigmoid(bias)
    return torch.nn.functional.pad(bias, [prefix_tokens, 0, prefix_tokens, 0])


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return x @ weight.T + (0 if bias is None else bias)
