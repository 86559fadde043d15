"""Hybrid Vision Transformers: a CNN's feature map projected to patches (``HybridEmbed``), then a ViT.

``vit_*_r26_*`` / ``vit_*_r50_*`` (a ResNetV2), ``vit_*_resnet*d_*`` (a ResNet), ``vit_base_mci_224``
(MobileCLIP's stem) and ``vitamin_*`` (MBConv stages, no projection). The CNN has nothing to resample: at
another input size its feature map grows by its stride. What resizes is the ViT's: the position embedding,
on the patch grid ``img_size / (CNN stride x projection patch)``, resampled exactly as a plain ViT's, so the
cases are :class:`~harness.families.vit.VitFamily`'s with that grid.

``patch_sizes`` set the projection's patch (a kernel over the CNN's feature map, 8x8 in ``vit_tiny_r_s16_p8``,
1x1 in most), as ``HybridEmbed.set_input_size(patch_size=...)`` documents (timm 1.0.31): the projection's kernel
resampled as a ViT's patch kernel (``resample_patch_embed``), the grid ``feature map // patch``, the position
embedding resampled to it. A hybrid without a projection (``vitamin_*``: ``proj=False``) has no patch to set: a
matrix error.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import nn

from harness.families import Geometry, Size, Target, register_family, to_size
from harness.families.base import GEOMETRIC, Family, meta_model
from harness.families.vit import VitFamily, is_hybrid


@dataclass(frozen=True)
class HybridGeometry(Geometry):
    feature_ratio: Size = (1, 1)   # input pixels per cell of the CNN's feature map (its total stride)


@register_family
class HybridVitFamily(VitFamily):
    name = 'vit_hybrid'
    trigger_kinds = GEOMETRIC + ('patch',)   # the CNN stem's stride is fixed; its oracle does not model
                                             # dynamic_img_pad

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
        """The CNN's feature map at the target in cells of the target's projection patch."""
        patch = to_size(target.patch_size) if target.patch_size else source.patch_size
        stride = [ratio * p for ratio, p in zip(source.feature_ratio, patch)]
        grid = (target.img_size[0] // stride[0], target.img_size[1] // stride[1])
        return dataclasses.replace(source, img_size=target.img_size, patch_size=patch, grid_size=grid)

    def axis_problem(self, axis, model):
        if axis == 'patch_sizes' and not isinstance(meta_model(model).patch_embed.proj, nn.Conv2d):
            return (f'{model.name} projects no patches (its HybridEmbed has no projection, proj=False): there is no '
                    f'patch size to set ({self.name} family)')
        return super().axis_problem(axis, model)

    def total_downsample(self, geometry: HybridGeometry) -> int:
        return max(geometry.feature_ratio)
