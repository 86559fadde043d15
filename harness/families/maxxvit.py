"""MaxViT, MaxxViT and CoAtNet (``maxxvit.py``'s ``MaxxVit``): a convolutional stem and stages whose attention
is biased by relative-position modules, one window per module.

Two kinds of window: MaxViT blocks attend within a window partition (``attn_block``) and across a grid
partition (``attn_grid``), both ``img_size // partition_ratio`` (32: 7x7 at 224) in every stage; a CoAtNet
transformer block attends over its stage's whole feature map. Tables are flat (timm's ``RelPosBias``) or per
head (the TensorFlow release's ``RelPosBiasTf``), or an MLP of log-spaced offsets (``rmlp`` models). The feature
maps follow ``feature_info``, as a CNN's do (:class:`harness.families.cnn.CnnFamily`).

timm re-chooses the windows for a new input size at create time (the checkpoint's tables resampled as it loads)
and with ``set_input_size`` (1.0.31 on); there is no ``dynamic_img_size``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from torch import nn

from harness.families import Geometry, Size, Target, register_family, to_size
from harness.families.base import GEOMETRIC, Family, native_geometry, timm_class
from harness.families.cnn import CnnFamily
from harness.families.rel_pos import RelPosModules, rel_pos_modules
from harness.store.case_result import CHECKS

_STAGE = re.compile(r'stages\.(\d+)\.')
_PARTITIONS = ('attn_block', 'attn_grid')   # module names of MaxViT's window and grid attention


@register_family
class MaxxVitFamily(RelPosModules, CnnFamily):
    name = 'maxxvit'
    attention = 'windows'   # block and grid partitions
    trigger_kinds = GEOMETRIC
    category = 'oracle'
    rank = 0
    model_classes = ('timm.models.maxxvit.MaxxVit',)
    paths = ('create', 'set_input_size')
    checks = CHECKS
    stores_geometry = True
    claim = Family.claim   # by class, as every family with an oracle

    def miniatures(self, model):
        """Every stage (and so every partition) kept, one block each, 32 channels (one 32-wide head) doubling
        once; else one block per stage at its own widths."""
        stages = len(model.stages)
        return ({'embed_dim': tuple(32 * min(2, 2 ** i) for i in range(stages)), 'depths': (1,) * stages},
                {'depths': (1,) * stages})

    def geometry(self, model: nn.Module) -> Geometry:
        """CnnFamily's feature maps, for the input size the model was built for (not its pretrained config's)."""
        geometry = super().geometry(model)
        ratio = getattr(model, 'partition_ratio', None) or _default_partition_ratio()
        size = _input_size(model, geometry, ratio)
        stride = geometry.patch_size
        return dataclasses.replace(geometry, img_size=size, grid_size=(size[0] // stride[0], size[1] // stride[1]),
                                   partition_ratio=ratio, stage_depths=tuple(len(s.blocks) for s in model.stages))

    def rel_pos_window(self, module: str, geometry: Geometry) -> Size:
        if any(partition in module.split('.') for partition in _PARTITIONS):
            return geometry.img_size[0] // geometry.partition_ratio, geometry.img_size[1] // geometry.partition_ratio
        return _stage_map(geometry, int(_STAGE.match(module).group(1)))

    def create_kwargs(self, target: Target) -> dict[str, Any]:
        return {'img_size': target.img_size}

    def size_problem(self, model, size: Size, patch_size: int | None) -> str | None:
        """Each side a multiple of the last stride, and every stage's feature map whole windows."""
        problem = super().size_problem(model, size, patch_size)
        if problem:
            return problem
        at = self.expected_geometry(native_geometry(self, model), Target(size))
        for name, window in at.rel_pos_windows:
            stage = int(_STAGE.match(name).group(1))
            feature_map = _stage_map(at, stage)
            if min(window) < 1 or feature_map[0] % window[0] or feature_map[1] % window[1]:
                return (f'{size[0]}x{size[1]}: stage {stage}\'s {feature_map[0]}x{feature_map[1]} feature map does '
                        f'not split into {window[0]}x{window[1]} partitions (img_size // {at.partition_ratio})')
        return None


def _stage_map(geometry: Geometry, stage: int) -> Size:
    """The feature map of stage ``stage`` (feature_info lists the stem first)."""
    reduction = geometry.stage_reductions[stage + 1]
    return geometry.img_size[0] // reduction, geometry.img_size[1] // reduction


def _default_partition_ratio() -> int:
    return timm_class('timm.models.maxxvit.MaxxVitTransformerCfg')().partition_ratio


def _input_size(model: nn.Module, geometry: Geometry, ratio: int) -> Size:
    """``model.img_size`` (timm 1.0.31 on); before that the model does not keep it, so it is read back from the
    first relative-position window: a partition is ``img_size // ratio``, a stage's feature map
    ``img_size // reduction``."""
    if getattr(model, 'img_size', None) is not None:
        return to_size(model.img_size)
    first = rel_pos_modules(model)[0]
    if any(partition in first.name.split('.') for partition in _PARTITIONS):
        scale = ratio
    else:
        scale = geometry.stage_reductions[int(_STAGE.match(first.name).group(1)) + 1]
    return first.window[0] * scale, first.window[1] * scale
