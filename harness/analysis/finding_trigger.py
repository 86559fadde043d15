"""A finding's trigger: what a failed case changed of its source geometry (a transposed grid, a rectangular source
window, a padded input, ...), read from its record. Part of a finding's signature
(:mod:`harness.analysis.findings`); the names are those of the trigger kinds (:mod:`harness.spec.triggers`) that make
such cases."""
from __future__ import annotations

from typing import Any

from harness.spec.vocabulary import as_hw


def trigger(record: dict[str, Any]) -> str:
    """What the case changed of its source geometry, as the trigger kinds (:mod:`harness.spec.triggers`) name it:
    a padded input if any, else the window's change (a window read wrongly fails every size it is resized to),
    else the patch's, else the grid's; '' for none, or where the record does not say its source (an older
    harness)."""
    source_patch, patch = record.get('source_patch_size'), record.get('patch_size')
    kinds = (_pad_trigger(record),
             _window_trigger(as_hw(record.get('source_window_size')), as_hw(record.get('window_size'))),
             'patch change' if source_patch is not None and patch is not None and source_patch != patch else '',
             _grid_trigger(as_hw(record.get('source_img_size')), as_hw(record.get('img_size'))))
    return next(filter(None, kinds), '')


def _pad_trigger(record: dict[str, Any]) -> str:
    """'padded input' for a model built with dynamic_img_pad at a size its patch does not divide (the img_pad
    trigger): the padding, not the grid's shape, is what such a case exercises."""
    patch = record.get('patch_size') or record.get('source_patch_size')
    padded = (record.get('model_overrides') or {}).get('dynamic_img_pad')
    return 'padded input' if padded and patch and any(side % patch for side in record.get('img_size') or ()) else ''


def _grid_trigger(source: tuple[int, int] | None, target: tuple[int, int] | None) -> str:
    if source is None or target is None or source == target:
        return ''
    if source[0] != source[1]:
        return 'transposed grid' if target == source[::-1] else 'rectangular source grid'
    return 'rectangular grid' if target[0] != target[1] else ''


def _window_trigger(source: tuple[int, int] | None, target: tuple[int, int] | None) -> str:
    if source is not None and source[0] != source[1]:
        return 'rectangular source window'
    if source is None or target is None or source == target:
        return ''
    return 'rectangular window' if target[0] != target[1] else 'window change'
