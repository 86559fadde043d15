"""Vision Transformers: absolute position embedding + patch embedding.

Every ``VisionTransformer`` whose patches come straight from the image: timm's ViTs, DeiT and DeiT-III
(``deit.py``, distilled models with two prefix tokens included), registers, ``no_embed_class`` and global-pool
variants. Hybrids (a CNN stem before the patches, ``HybridEmbed``: ``vit_*_r50_*``, ``vitamin_*``) are not
claimed: the oracle would need the stem's stride and padding; they stay unsupported until it does.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from harness.reference.pos_embed import resample_pos_embed
from harness.families import Geometry, Target, register_family, to_size
from harness.families.base import Family, model_carrying, timm_class


@register_family
class VitFamily(Family):
    name = 'vit'
    model_classes = ('timm.models.vision_transformer.VisionTransformer',)
    origins = ('timm', 'openai_clip', 'open_clip', 'dinov2', 'big_vision', 'hub', 'file')

    def claim(self, probe):
        why_not = super().claim(probe)
        patch_embed = timm_class('timm.layers.PatchEmbed')
        if why_not is None and patch_embed and not isinstance(probe.model.patch_embed, patch_embed):
            return (f'a hybrid ViT ({type(probe.model.patch_embed).__name__}: a CNN stem before the patches); the '
                    f'vit oracle does not model the stem yet')
        return why_not

    def geometry(self, model: nn.Module) -> Geometry:
        pe = model.patch_embed
        num_prefix = getattr(model, 'num_prefix_tokens', 1)
        return Geometry(
            img_size=to_size(pe.img_size), patch_size=to_size(pe.patch_size), grid_size=to_size(pe.grid_size),
            embed_dim=model.embed_dim, num_features=model.num_features, num_classes=model.num_classes,
            num_prefix_tokens=num_prefix,
            pos_prefix_tokens=0 if getattr(model, 'no_embed_class', False) else num_prefix,
            stage_depths=(len(model.blocks),),
        )

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        patch = to_size(target.patch_size) if target.patch_size else source.patch_size
        grid = (target.img_size[0] // patch[0], target.img_size[1] // patch[1])
        return Geometry(**{**source.__dict__, 'img_size': target.img_size, 'patch_size': patch, 'grid_size': grid})

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        tokens = geometry.num_prefix_tokens + geometry.grid_size[0] * geometry.grid_size[1]
        return {
            'forward_features': (batch, tokens, geometry.embed_dim),
            'logits': (batch, geometry.num_classes or geometry.num_features),
            'forward_intermediates': [(batch, geometry.embed_dim, *geometry.grid_size)] * geometry.stage_depths[0],
        }

    def dynamic_reference(self, native, spec, source, computed, weights):
        """The model built at the target size (timm's static path), carrying the harness's resample."""
        return model_carrying(spec.name, {**spec.kwargs, 'img_size': computed.img_size}, weights)

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        out = super().resample_state_dict(state_dict, source, target, interpolation, antialias)
        if 'pos_embed' in out and source.grid_size != target.grid_size:
            out['pos_embed'] = resample_pos_embed(
                out['pos_embed'], source.grid_size, target.grid_size, source.pos_prefix_tokens,
                interpolation=interpolation, antialias=antialias)
        return out

