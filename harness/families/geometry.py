"""The spatial vocabulary every family speaks: a size, the configuration a case asks for (:class:`Target`) and a
model's geometry (:class:`Geometry`). Below the family registry and the families: all of them import it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.spec.vocabulary import Size


@dataclass(frozen=True)
class Target:
    """The configuration a case asks for; ``None`` keeps the checkpoint's own value."""
    img_size: Size
    patch_size: int | None = None
    window_size: int | Size | None = None   # one window for every stage: square (int) or (h, w)


@dataclass(frozen=True)
class Geometry:
    """Spatial facts about a model, either read off a built model or expected for a target."""
    img_size: Size
    patch_size: Size                    # CNN: its total stride, input pixels per feature-map cell
    grid_size: Size
    embed_dim: int
    num_features: int
    num_classes: int
    num_prefix_tokens: int = 0          # ViT: tokens before the patch tokens in forward_features
    pos_prefix_tokens: int = 0          # ViT: prefix positions stored in pos_embed (0 for no_embed_class)
    window_sizes: tuple[Size, ...] = ()  # Swin: per stage, the window it computes with (at most its feature map)
    shift_sizes: tuple[Size, ...] = ()   # Swin: per stage, the shift of its odd (shifted-window) blocks
    window_config: tuple[Size, ...] = ()  # Swin: per stage, the window it was configured with, before that limit
    window_ratio: int | None = None      # Swin-V2-CR built without a window: every stage's is the grid // this
    stage_channels: tuple[int, ...] = field(default=())    # Swin, CNN: per stage (CNN: per feature_info entry)
    stage_depths: tuple[int, ...] = field(default=())      # ViT: (depth,), Swin: blocks per stage
    stage_reductions: tuple[int, ...] = field(default=())  # CNN, MaxxViT: per feature_info entry
    # BEiT, relative-position ViTs, MaxxViT: the window of every relative-position module, by module name
    rel_pos_windows: tuple[tuple[str, Size], ...] = field(default=())
    partition_ratio: int = 0            # MaxxViT: input pixels per window (and grid) cell, img_size // window
    feature_layout: str = 'NCHW'        # CNN: forward_features as NCHW, NHWC or tokens (NLC, after the prefix)
    img_pad: bool = False               # ViT: built with dynamic_img_pad, inputs padded to ceil(size / patch) patches


def to_size(value: Any) -> Size:
    """An int, (h, w) tuple or list as an (h, w) tuple."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])
