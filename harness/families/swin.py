"""Swin Transformers (``SwinTransformer``, v1): windowed attention with relative position bias tables."""
from __future__ import annotations

import copy
import re
from typing import Any

from torch import nn

from harness.reference.rel_pos_table import resample_rel_pos_table
from harness.reference.window_masks import shifted_window_mask
from harness.families import Geometry, Size, Target, register_family, to_size
from harness.families.base import Family

_TABLE_KEY = re.compile(r'layers\.(\d+)\.blocks\.\d+\.attn\.relative_position_bias_table$')


@register_family
class SwinFamily(Family):
    name = 'swin'
    model_classes = ('timm.models.swin_transformer.SwinTransformer',)
    origins = ('timm', 'microsoft', 'hub', 'file')
    window_sizes_apply = True

    def geometry(self, model: nn.Module) -> Geometry:
        pe = model.patch_embed
        return Geometry(
            img_size=to_size(pe.img_size), patch_size=to_size(pe.patch_size), grid_size=to_size(pe.grid_size),
            embed_dim=model.feature_info[0]['num_chs'], num_features=model.num_features,
            num_classes=model.num_classes,
            window_sizes=tuple(to_size(stage.blocks[0].attn.window_size) for stage in model.layers),
            shift_sizes=tuple(to_size(stage.blocks[1].shift_size) if len(stage.blocks) > 1 else (0, 0)
                              for stage in model.layers),
            stage_channels=tuple(info['num_chs'] for info in model.feature_info),
            stage_depths=tuple(len(stage.blocks) for stage in model.layers),
        )

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        patch = to_size(target.patch_size) if target.patch_size else source.patch_size
        grid = (target.img_size[0] // patch[0], target.img_size[1] // patch[1])
        window = to_size(target.window_size) if target.window_size else source.window_sizes[0]
        stages = range(len(source.stage_depths))
        windows = tuple(_clamped_window(window, _stage_grid(grid, i)) for i in stages)
        shifts = tuple(_shift(window, _stage_grid(grid, i)) if source.stage_depths[i] > 1 else (0, 0) for i in stages)
        return Geometry(**{**source.__dict__, 'img_size': target.img_size, 'patch_size': patch,
                           'grid_size': grid, 'window_sizes': windows, 'shift_sizes': shifts})

    def computed_geometry(self, source: Geometry, target: Target, path: str) -> Geometry:
        """``dynamic_img_size`` keeps the windows and shifts the source configuration chose for its own grid
        (timm builds only the attention masks per input); the other paths choose them for the target."""
        expected = self.expected_geometry(source, target)
        if path != 'dynamic':
            return expected
        return Geometry(**{**expected.__dict__, 'window_sizes': source.window_sizes,
                           'shift_sizes': source.shift_sizes})

    def dynamic_reference(self, native, spec, source, computed, weights):
        """The source model itself (its windows, shifts and tables) fed the target size through timm's static
        path, each shifted block given the harness's own attention mask for its stage's grid at the target."""
        model = copy.deepcopy(native)
        model.patch_embed.strict_img_size = False
        for i, stage in enumerate(model.layers):
            grid = _stage_grid(computed.grid_size, i)
            for j, block in enumerate(stage.blocks):
                shift = computed.shift_sizes[i] if j % 2 else (0, 0)
                block.dynamic_mask = False
                block.attn_mask = shifted_window_mask(grid, computed.window_sizes[i], shift)
        return model.eval()

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        stages = range(len(geometry.stage_depths))
        last = _stage_grid(geometry.grid_size, stages[-1])
        return {
            'forward_features': (batch, *last, geometry.num_features),
            'logits': (batch, geometry.num_classes or geometry.num_features),
            'forward_intermediates': [
                (batch, geometry.stage_channels[i], *_stage_grid(geometry.grid_size, i)) for i in stages],
        }

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

    def set_input_size_kwargs(self, target: Target, source: Geometry) -> dict[str, Any]:
        # without an explicit window, set_input_size scales windows with the grid while create keeps the
        # model's own: ask both paths for the same window so they are comparable
        kwargs = self.create_kwargs(target)
        kwargs.setdefault('window_size', source.window_sizes[0])
        return kwargs

    def total_downsample(self, geometry: Geometry) -> int:
        return 2 ** (len(geometry.stage_depths) - 1)


def _stage_grid(grid: Size, stage: int) -> Size:
    return grid[0] // 2 ** stage, grid[1] // 2 ** stage


def _shift(window: Size, feat: Size) -> Size:
    """Shifted blocks shift by half a window, along an axis the window does not already cover whole."""
    return tuple(w // 2 if f > w else 0 for w, f in zip(window, feat))


def _clamped_window(window: Size, feat: Size) -> Size:
    """A stage whose feature map is smaller than the window uses the feature map as its window."""
    return min(window[0], feat[0]), min(window[1], feat[1])

