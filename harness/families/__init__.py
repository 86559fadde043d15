"""What the harness knows about each model family, and how to tell which family a timm model is in.

A family answers the questions that differ between ViT and Swin: which arguments change the input size,
what geometry a model should have at a target size, what output shapes follow from it, and which tensors
are resampled (so the fidelity check knows what to recompute).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

Size = tuple[int, int]


@dataclass(frozen=True)
class Target:
    """The configuration a case asks for; ``None`` keeps the checkpoint's own value."""
    img_size: Size
    patch_size: int | None = None
    window_size: int | None = None


@dataclass(frozen=True)
class Geometry:
    """Spatial facts about a model, either read off a built model or expected for a target."""
    img_size: Size
    patch_size: Size
    grid_size: Size
    embed_dim: int
    num_features: int
    num_classes: int
    num_prefix_tokens: int = 0          # ViT: tokens before the patch tokens in forward_features
    pos_prefix_tokens: int = 0          # ViT: prefix positions stored in pos_embed (0 for no_embed_class)
    window_sizes: tuple[Size, ...] = ()  # Swin: per stage
    shift_sizes: tuple[Size, ...] = ()   # Swin: per stage, the shift of its odd (shifted-window) blocks
    stage_channels: tuple[int, ...] = field(default=())  # Swin: per stage
    stage_depths: tuple[int, ...] = field(default=())    # ViT: (depth,), Swin: blocks per stage


def family_of(model_name: str):
    """The family of a timm model name, or None when the harness does not support it."""
    from harness.families.swin import SWIN
    from harness.families.vit import VIT
    module = _entrypoint_module(model_name)
    for family in (VIT, SWIN):
        if module == family.timm_module:
            return family
    return None


@functools.lru_cache(maxsize=None)
def _entrypoint_module(model_name: str) -> str | None:
    import timm.models
    try:
        return timm.models.model_entrypoint(model_name).__module__
    except (RuntimeError, KeyError):
        return None


def to_size(value: Any) -> Size:
    """An int, (h, w) tuple or list as an (h, w) tuple."""
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])
