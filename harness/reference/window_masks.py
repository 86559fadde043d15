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
