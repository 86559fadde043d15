"""Swin Transformers (``SwinTransformer``, v1): windowed attention with relative position bias tables.

A window change resamples each block's ``(2h - 1)(2w - 1) x heads`` table from the stage's window at the
source to its window at the target (:mod:`harness.reference.rel_pos_table`), per stage and per axis: a
rectangular window, or one per stage (``swin_s3_*``), is resampled from what it really was.
"""
from __future__ import annotations

import re

from harness.families import register_family
from harness.families.windowed import ShiftedWindowFamily
from harness.reference.rel_pos_table import resample_rel_pos_table

_TABLE_KEY = re.compile(r'layers\.(\d+)\.blocks\.\d+\.attn\.relative_position_bias_table$')


@register_family
class SwinFamily(ShiftedWindowFamily):
    name = 'swin'
    trigger_kinds = ShiftedWindowFamily.trigger_kinds + ('patch', 'window_per_stage')
    model_classes = ('timm.models.swin_transformer.SwinTransformer',)

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        out = super().resample_state_dict(state_dict, source, target, interpolation, antialias)
        for key, value in state_dict.items():
            match = _TABLE_KEY.search(key)
            if match:
                stage = int(match.group(1))
                old, new = source.window_sizes[stage], target.window_sizes[stage]
                if old != new:
                    out[key] = resample_rel_pos_table(value, old, new)
        return out
