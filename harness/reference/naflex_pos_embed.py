"""NaFlexVit's position tables: what it adds at an input's grid, resampled from the table it stores.

NaFlexVit stores its learned position embedding as the grid it covers, ``(1, H, W, C)`` (or factorized, one
``(1, H, C)`` table for rows and one ``(1, W, C)`` for columns, summed), and resamples it for every batch to
the batch's patch grid. Both are the ViT resample of :mod:`.pos_embed` applied to that layout, with two
options of its own: *aspect preserving* resizes to a square of the grid's longer side and keeps its top-left
``gh x gw`` corner (a 16x16 table stands for a square image; a wide input sees a band of it), and the
factorized tables are resized as 1-D signals (linear, half-pixel centres, no antialiasing).
"""
from __future__ import annotations

from torch import Tensor

from harness.reference.pos_embed import resample_pos_embed


def naflex_pos_table(table: Tensor, grid: tuple[int, int], interpolation: str = 'bicubic', antialias: bool = True,
                     align_corners: bool = False, aspect_preserving: bool = False) -> Tensor:
    """The ``(1, gh, gw, C)`` position embedding added at a ``grid`` input, from a ``(1, H, W, C)`` table
    (the table itself at its own grid)."""
    own = tuple(table.shape[1:3])
    if own == tuple(grid):
        return table
    size = (max(grid), max(grid)) if aspect_preserving else tuple(grid)
    flat = resample_pos_embed(table.reshape(1, own[0] * own[1], -1), own, size, 0, interpolation=interpolation,
                              antialias=antialias, align_corners=align_corners)
    return flat.reshape(1, *size, -1)[:, :grid[0], :grid[1]]


def naflex_axis_table(table: Tensor, length: int, longest: int, aspect_preserving: bool = False) -> Tensor:
    """One factorized ``(1, L, C)`` table at an input whose grid has ``length`` cells along this axis and
    ``longest`` along its longer one: resized as a 1-D signal to ``longest`` (aspect preserving) or ``length``
    cells, then its first ``length`` kept."""
    size = longest if aspect_preserving else length
    own = table.shape[1]
    if own != size:
        table = resample_pos_embed(table, (1, own), (1, size), 0, interpolation='bilinear', antialias=False)
    return table[:, :length]
