"""Rotary position embeddings (RoPE) on a 2-D patch grid: the rotation a model at a given grid must apply.

RoPE (Su et al., https://arxiv.org/abs/2104.09864) splits each attention head's ``head_dim`` channels into
``head_dim / 2`` pairs and rotates pair ``j`` of a patch token's query and key by an angle ``theta_j(p)`` of
the token's position ``p``, so that attention logits depend on relative positions. For images the position is
2-D and the angles are defined by one of three schemes, all used by timm's ``eva.py`` models:

* ``axial`` (EVA-02 https://arxiv.org/abs/2303.11331, RoPE-Axial https://arxiv.org/abs/2403.13298, PE, timm's
  rope ViTs): the first ``head_dim / 4`` pairs rotate with the first coordinate, the last ``head_dim / 4``
  with the second, band ``k`` at frequency ``omega_k = T ** (-4k / head_dim)``. Positions are patch indices
  plus ``grid_offset``; with a reference grid (EVA-02's pretraining grid) they are rescaled so that the grid
  at hand spans the reference grid: ``(i + offset) * ref / n`` along each axis.
* ``mixed`` (RoPE-Mixed, https://arxiv.org/abs/2403.13298): learned frequencies per block, head and pair,
  ``theta = f_x * p_1 + f_y * p_2`` on integer patch indices (the frequencies come from the checkpoint).
* ``dinov3`` (DINOv3, https://arxiv.org/abs/2508.10104): like ``axial`` but on coordinates normalised to
  ``[-1, 1]`` whatever the grid (patch centres ``2 (i + 1/2 + offset) / n - 1``), with periods
  ``T ** (4k / head_dim)``, i.e. ``omega_k = 2 pi T ** (-4k / head_dim)``.

``indexing`` names what the first coordinate is: ``'ij'`` the row (height), ``'xy'`` the column (width).
Tokens are always in row-major order over the ``(H, W)`` grid, whatever the indexing.

The embedding is returned as timm's ``get_embed()`` returns it, ``cat([sin, cos])`` over the head's channels,
each channel carrying the angle of its pair: pairs are adjacent channels ``(2j, 2j + 1)`` (interleaved) or
channels ``(j, j + head_dim / 2)`` (``rotate_half``). Angles are computed in float64 from these definitions;
nothing here calls timm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from harness.spec.vocabulary import Size

KINDS = ('axial', 'mixed', 'dinov3')


@dataclass(frozen=True)
class RopeConfig:
    """How a model defines its rotary embedding (everything but the grid, and the learned frequencies)."""
    kind: str                         # one of KINDS
    head_dim: int
    temperature: float = 10000.0      # axial, dinov3: the frequency base T
    indexing: str = 'ij'              # 'ij': the first coordinate is the row; 'xy': the column
    grid_offset: float = 0.0          # axial, dinov3: added to every patch index
    ref_grid: Size | None = None      # axial: positions rescaled so any grid spans this (H, W) grid
    rotate_half: bool = False         # pairs are (j, j + head_dim / 2) instead of (2j, 2j + 1)
    normalize: str = 'separate'       # dinov3: each axis divided by its own size, or by the grid's 'min'/'max' side

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'unknown rope kind {self.kind!r}; expected one of {", ".join(KINDS)}')
        if self.head_dim % 4:
            raise ValueError(f'a 2-D rope needs head_dim divisible by 4, got {self.head_dim}')
        if self.indexing not in ('ij', 'xy'):
            raise ValueError(f"indexing must be 'ij' or 'xy', got {self.indexing!r}")


def axis_positions(config: RopeConfig, grid: Size) -> tuple[Tensor, Tensor]:
    """The position of each row and of each column of an ``(H, W)`` grid (float64)."""
    height, width = grid
    rows, cols = (torch.arange(n, dtype=torch.float64) for n in grid)
    if config.kind == 'mixed':
        return rows, cols
    if config.kind == 'dinov3':
        sides = {'separate': grid, 'min': (min(grid),) * 2, 'max': (max(grid),) * 2}[config.normalize]
        return tuple(2 * (t + 0.5 + config.grid_offset) / side - 1 for t, side in zip((rows, cols), sides))
    rows, cols = rows + config.grid_offset, cols + config.grid_offset
    if config.ref_grid is not None:
        rows, cols = rows * config.ref_grid[0] / height, cols * config.ref_grid[1] / width
    return rows, cols


def token_coordinates(config: RopeConfig, grid: Size) -> Tensor:
    """``(H * W, 2)``: each token's (first, second) coordinate, tokens in row-major order."""
    rows, cols = axis_positions(config, grid)
    row_of_token = rows.repeat_interleave(len(cols))   # token n = i * W + j is in row i ...
    col_of_token = cols.repeat(len(rows))              # ... and column j
    first, second = (row_of_token, col_of_token) if config.indexing == 'ij' else (col_of_token, row_of_token)
    return torch.stack([first, second], dim=-1)


def band_frequencies(config: RopeConfig) -> Tensor:
    """``(head_dim / 4,)`` angular frequencies of the axial and dinov3 bands (radians per unit of position)."""
    k = torch.arange(config.head_dim // 4, dtype=torch.float64)
    omega = float(config.temperature) ** (-4 * k / config.head_dim)
    return 2 * math.pi * omega if config.kind == 'dinov3' else omega


def pair_angles(config: RopeConfig, grid: Size, mixed_freqs: Tensor | None = None) -> Tensor:
    """The rotation angle of every pair at every token: ``(H * W, head_dim / 2)``, or for ``mixed``
    ``(depth, heads, H * W, head_dim / 2)`` from learned ``mixed_freqs`` ``(2, depth, heads, head_dim / 2)``
    (``[0]`` multiplies the first coordinate, ``[1]`` the second)."""
    coords = token_coordinates(config, grid)                               # (N, 2)
    if config.kind == 'mixed':
        if mixed_freqs is None or mixed_freqs.shape[0] != 2 or mixed_freqs.shape[-1] != config.head_dim // 2:
            raise ValueError(f'mixed rope needs learned frequencies (2, depth, heads, {config.head_dim // 2}), got '
                             f'{None if mixed_freqs is None else tuple(mixed_freqs.shape)}')
        fx, fy = mixed_freqs.to(torch.float64)
        return fx[:, :, None, :] * coords[:, 0, None] + fy[:, :, None, :] * coords[:, 1, None]
    omega = band_frequencies(config)
    return torch.cat([coords[:, :1] * omega, coords[:, 1:] * omega], dim=-1)   # first axis' bands, then second's


def channel_pairs(config: RopeConfig) -> Tensor:
    """The pair each of the head's channels belongs to."""
    channel = torch.arange(config.head_dim)
    return channel % (config.head_dim // 2) if config.rotate_half else channel // 2


def rope_embedding(config: RopeConfig, grid: Size, mixed_freqs: Tensor | None = None) -> Tensor:
    """What a model must rotate its patch tokens' queries and keys by at ``grid``: ``cat([sin, cos])`` per
    channel, ``(H * W, 2 * head_dim)`` (``mixed``: ``(depth, heads, H * W, 2 * head_dim)``), float32."""
    angles = pair_angles(config, grid, mixed_freqs).index_select(-1, channel_pairs(config))
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()
