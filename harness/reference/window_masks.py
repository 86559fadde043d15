"""The attention masks of Swin's shifted windows."""
from __future__ import annotations

import math

import torch
from torch import Tensor


def shifted_window_mask(feat_size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> Tensor | None:
    """The additive attention mask of Swin's shifted windows for a ``feat_size`` map (None without a shift).

    The map is padded to whole windows and rolled by ``-shift``; the roll brings pieces of the map that are
    not neighbours into one window, so tokens may attend only within their own region. Along each axis the
    rolled map has three regions, ``[0, L - window)``, ``[L - window, L - shift)`` and ``[L - shift, L)``
    (Swin paper, Fig. 4); an axis that is not shifted is one region. Returns
    ``(num_windows, window_area, window_area)``: 0 within a region, -100 across.
    """
    if not any(shift):
        return None
    padded = [math.ceil(f / w) * w for f, w in zip(feat_size, window)]
    regions = [torch.bucketize(torch.arange(n), torch.tensor([n - w, n - s]), right=True) if s
               else torch.zeros(n, dtype=torch.long) for n, w, s in zip(padded, window, shift)]
    labels = regions[0][:, None] * 3 + regions[1][None, :]                        # (H, W)
    windows = labels.reshape(padded[0] // window[0], window[0], padded[1] // window[1], window[1])
    windows = windows.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])      # (num_windows, area)
    different = windows[:, None, :] != windows[:, :, None]
    return different.float() * -100.0


def position_map(feat_size: tuple[int, int]) -> Tensor:
    """``(1, H, W, 1)``: each position of a ``feat_size`` map holding its own number, 1 to H*W (0 is left for
    padding), so the windows a block forms from it say which position went where."""
    return torch.arange(1, feat_size[0] * feat_size[1] + 1, dtype=torch.float32).reshape(1, *feat_size, 1)


def shifted_windows(feat_size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """The windows Swin's (shifted) window attention forms from :func:`position_map`, ``(num_windows, area)``:
    the map rolled by ``-shift`` (rows by the height's shift, columns by the width's), padded bottom and right
    with 0 to whole windows, and cut into windows in row-major order, each window's positions row-major."""
    rolled = torch.roll(position_map(feat_size)[0, ..., 0], shifts=(-shift[0], -shift[1]), dims=(0, 1))
    padded = [math.ceil(f / w) * w for f, w in zip(feat_size, window)]
    grid = torch.zeros(padded)
    grid[:feat_size[0], :feat_size[1]] = rolled
    windows = grid.reshape(padded[0] // window[0], window[0], padded[1] // window[1], window[1])
    return windows.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
