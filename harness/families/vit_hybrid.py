"""Hybrid Vision Transformers: a CNN's feature map projected to patches (``HybridEmbed``), then a ViT.

``vit_*_r26_*`` / ``vit_*_r50_*`` (a ResNetV2), ``vit_*_resnet*d_*`` (a ResNet), ``vit_base_mci_224``
(MobileCLIP's stem) and ``vitamin_*`` (MBConv stages, no projection). The CNN has nothing to resample: at
another input size its feature map grows by its stride. What resizes is the ViT's: the position embedding,
on the patch grid ``img_size / (CNN stride x projection patch)``, resampled exactly as a plain ViT's, so the
cases are :class:`~harness.families.vit.VitFamily`'s with that grid. The projection's patch size (a kernel
over the CNN's feature map, 1x1 in most) is not an axis here: ``patch_sizes`` do not apply.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from harness.families import Geometry, Size, Target, register_family
from harness.families.base import GEOMETRIC, Family
from harness.families.vit import VitFamily, is_hybrid


@dataclass(frozen=True)
class HybridGeometry(Geometry):
    feature_ratio: Size = (1, 1)   # input pixels per cell of the CNN's feature map (its total stride)


@register_family
class HybridVitFamily(VitFamily):
    name = 'vit_hybrid'
    trigger_kinds = GEOMETRIC   # the CNN stem's stride is fixed; its oracle does not model dynamic_img_pad
    origins = ('timm', 'hub', 'file')
    patch_sizes_apply = False

    def claim(self, probe):
        why_not = Family.claim(self, probe)   # a VisionTransformer ...
        if why_not is None and not is_hybrid(probe.model.patch_embed):
            return ''                         # ... with a HybridEmbed
        return why_not

    def geometry(self, model: nn.Module) -> HybridGeometry:
        plain = super().geometry(model)
        ratio = tuple(size // (grid * patch) for size, grid, patch in
                      zip(plain.img_size, plain.grid_size, plain.patch_size))
        return HybridGeometry(**plain.__dict__, feature_ratio=ratio)

    def expected_geometry(self, source: HybridGeometry, target: Target) -> HybridGeometry:
        stride = [ratio * patch for ratio, patch in zip(source.feature_ratio, source.patch_size)]
        grid = (target.img_size[0] // stride[0], target.img_size[1] // stride[1])
        return dataclasses.replace(source, img_size=target.img_size, grid_size=grid)

    def total_downsample(self, geometry: HybridGeometry) -> int:
        return max(geometry.feature_ratio)
