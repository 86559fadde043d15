"""The words every layer of the harness shares, with no torch or timm behind them: the build paths a case takes
to a new size, and how sizes and windows are spelled.

A matrix names paths (:mod:`harness.spec.matrix`), a family says which it supports (:mod:`harness.families.base`),
results sort by them (:mod:`harness.results`): all read them here.
"""
from __future__ import annotations

from typing import Any

# the build paths that reach a new input size: timm.create_model(pretrained=True, img_size=...), set_input_size
# on a model built at its own size, and dynamic_img_size=True (resampled in every forward pass); in this order
PATHS = ('create', 'set_input_size', 'dynamic')

Size = tuple[int, int]   # (height, width)
Window = int | Size      # a window size: square (int) or rectangular (h, w)


def as_hw(value: Any) -> Size | None:
    """A size or window as a record or matrix spells it (an int for a square, or [H, W]) as (h, w); None for none."""
    if value is None:
        return None
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
