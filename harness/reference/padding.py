"""Inputs padded to whole patches, as ``dynamic_img_pad`` documents: zeros right and bottom (after
normalisation), to ``ceil(size / patch)`` patches per axis; the grid is that many patches."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec.vocabulary import Size


def padded_size(size: Size, patch: Size) -> Size:
    """``size`` rounded up to whole patches per axis."""
    return math.ceil(size[0] / patch[0]) * patch[0], math.ceil(size[1] / patch[1]) * patch[1]


def pad_right_bottom(images: torch.Tensor, patch: Size) -> torch.Tensor:
    """``(B, C, H, W)`` images zero-padded right and bottom to whole patches."""
    height, width = padded_size(tuple(images.shape[-2:]), patch)
    return F.pad(images, (0, width - images.shape[-1], 0, height - images.shape[-2]))


class PaddedInput(nn.Module):
    """A model built for the padded size, fed every input padded (:func:`pad_right_bottom`) first: what a model
    built with ``dynamic_img_pad`` must compute, with no padding code of timm's."""

    def __init__(self, model: nn.Module, patch: Size):
        super().__init__()
        self.model, self.patch = model, patch

    def forward_intermediates(self, images: torch.Tensor, **kwargs: Any):
        return self.model.forward_intermediates(pad_right_bottom(images, self.patch), **kwargs)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(pad_right_bottom(images, self.patch))

    def forward_head(self, features: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model.forward_head(features, **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pad_right_bottom(images, self.patch))
