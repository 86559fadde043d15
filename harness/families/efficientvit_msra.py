"""EfficientViT (MSRA, ``EfficientVitMsra``): cascaded group attention in local windows, biased by offset.

A 16x convolutional stem feeds three stages; each stage's attention runs in windows of
``min(window_size, stage resolution)`` cells, where the stage resolution follows the *shorter* side of the
image (``img_size // 16``, halved with ceiling per subsampling stage). Each window adds a learned bias per head
and absolute offset (``attention_biases``, LeViT's table; ``attention_bias_idxs`` expands it per token pair).
A stage whose map is smaller than its window attends over the whole map, so its window, and with it the
table, changes with the image size: timm 1.0.31 resizes the table (LeViT's bicubic resize) in
``set_input_size`` and in ``checkpoint_filter_fn`` at create time. Stages whose map covers a whole window keep
their table; the rest of the model is convolutions.

Fidelity compares the tables with the harness's own resize and, as derived tensors, the per-token-pair bias
each attention adds with the harness's own offset indexing at the windows the target must use. There is no
``dynamic_img_size``: a forward at another size keeps the source windows, which timm does not document as a
resize, so ``dynamic`` cases are ``unsupported``. Releases before 1.0.31 take only their own size
(``fixed_size`` claims the model there).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from harness.families import Geometry, Target, register_family, to_size
from harness.families.base import Family, traits_img_size
from harness.reference.offset_bias import offset_bias, resample_offset_bias_table

STEM_STRIDE = 16
_TABLE_KEY = re.compile(r'stages\.(\d+)\.blocks\.\d+\.mixer\.m\.attn\.attention_biases$')
DERIVED_SUFFIX = '[attention_bias_idxs]'   # a table's name plus this: the bias it expands to per token pair


@dataclass(frozen=True)
class EfficientVitGeometry(Geometry):
    window_limits: tuple[int, ...] = ()   # per stage: the configured window_size, the most its window can be


@register_family
class EfficientVitMsraFamily(Family):
    name = 'efficientvit_msra'
    attention = 'windows'   # cascaded group attention within each stage's window
    model_classes = ('timm.models.efficientvit_msra.EfficientVitMsra',)
    origins = ('timm', 'hub', 'file')
    paths = ('create', 'set_input_size')
    patch_sizes_apply = False
    fixed_patch = 'its 16x convolutional stem has no patch size to set'

    def claim(self, probe):
        why_not = super().claim(probe)
        if why_not is None and not hasattr(probe.model, 'set_input_size'):
            return ''   # before timm 1.0.31 it takes only its own size: fixed_size's to claim
        return why_not

    def miniatures(self, model):
        """Every stage (and its window) kept, one block of two 8-wide key heads each."""
        stages = len(model.stages)
        return ({'embed_dim': tuple(32 + 16 * i for i in range(stages)), 'key_dim': (8,) * stages,
                 'depth': (1,) * stages, 'num_heads': (2,) * stages},)

    def geometry(self, model: nn.Module) -> EfficientVitGeometry:
        size = _img_size(model)
        stages = list(model.stages)
        return EfficientVitGeometry(
            img_size=size, patch_size=(STEM_STRIDE, STEM_STRIDE), grid_size=_grid(size, STEM_STRIDE),
            embed_dim=model.feature_info[0]['num_chs'], num_features=model.num_features,
            num_classes=model.num_classes,
            window_sizes=tuple(to_size(_attention(stage).attn.resolution) for stage in stages),
            stage_channels=tuple(info['num_chs'] for info in model.feature_info),
            stage_depths=tuple(len(stage.blocks) for stage in stages),
            stage_reductions=tuple(info['reduction'] for info in model.feature_info),
            window_limits=tuple(_attention(stage).window_resolution for stage in stages),
        )

    def expected_geometry(self, source: EfficientVitGeometry, target: Target) -> EfficientVitGeometry:
        resolution = min(target.img_size) // STEM_STRIDE
        previous, windows = STEM_STRIDE, []
        for limit, reduction in zip(source.window_limits, source.stage_reductions):
            resolution = -(-resolution // (reduction // previous))   # a subsampling stage halves, with ceiling
            previous = reduction
            windows.append(to_size(min(limit, resolution)))
        return EfficientVitGeometry(**{**source.__dict__, 'img_size': target.img_size,
                                       'grid_size': _grid(target.img_size, STEM_STRIDE),
                                       'window_sizes': tuple(windows)})

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        maps = [(batch, channels, *_grid(geometry.img_size, reduction))
                for channels, reduction in zip(geometry.stage_channels, geometry.stage_reductions)]
        return {'forward_features': maps[-1], 'logits': (batch, geometry.num_classes or geometry.num_features),
                'forward_intermediates': maps}

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        """Each stage's tables resized where the stage's window changes (LeViT's recipe: bicubic, antialiased,
        whatever the checkpoint's origin)."""
        out = super().resample_state_dict(state_dict, source, target, interpolation, antialias)
        for key, value in state_dict.items():
            match = _TABLE_KEY.search(key)
            if match:
                stage = int(match.group(1))
                out[key] = resample_offset_bias_table(value, source.window_sizes[stage][0],
                                                      target.window_sizes[stage][0])
        return out

    def derived_tensors(self, model: nn.Module) -> dict[str, Any]:
        return {f'{name}.attention_biases{DERIVED_SUFFIX}': module.attention_biases[:, module.attention_bias_idxs]
                for name, module in model.named_modules() if hasattr(module, 'attention_bias_idxs')}

    def expected_derived_tensors(self, weights, spec, source, computed):
        return {f'{key}{DERIVED_SUFFIX}': offset_bias(value, computed.window_sizes[int(match.group(1))][0])
                for key, value in weights.items() if (match := _TABLE_KEY.search(key))}


def _attention(stage: nn.Module) -> nn.Module:
    """A stage's LocalWindowAttention (every block of a stage has the same windows)."""
    return stage.blocks[0].mixer.m


def _img_size(model: nn.Module) -> tuple[int, int]:
    """The (H, W) the model was built or last resized for, from its traits: the model itself keeps only the
    shorter side."""
    return traits_img_size(model) or to_size(model.img_size)


def _grid(size: tuple[int, int], reduction: int) -> tuple[int, int]:
    """The feature map after ``reduction``: every stride-2 step rounds up, so the map is the side over the
    reduction, rounded up."""
    return -(-size[0] // reduction), -(-size[1] // reduction)
