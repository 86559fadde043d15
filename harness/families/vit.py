"""Vision Transformers: absolute position embedding + patch embedding.

Every ``VisionTransformer`` whose patches come straight from the image (``PatchEmbed``): timm's ViTs, DeiT
and DeiT-III (``deit.py``; distilled models with two prefix tokens included), registers, ``no_embed_class``
and global-pool variants, FlexiViT. Hybrids (a CNN before the patches, ``HybridEmbed``: ``vit_*_r50_*``,
``vitamin_*``) are :mod:`harness.families.vit_hybrid`'s. Not claimed, with the reason: any other patch
embedding, and the two RADIO v3 ViTs whose create-time resample uses ``align_corners=True``
(:data:`ALIGN_CORNERS_AT_CREATE`), which the create path's oracle does not model.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from harness.families import Geometry, Target, register_family, to_size
from harness.families.base import GEOMETRIC, Family, head_kwargs, model_carrying, timm_class
from harness.reference.padding import PaddedInput, padded_size
from harness.reference.pos_embed import resample_pos_embed

PREFIX_TOKENS = ('cls_token', 'dist_token', 'reg_token')   # in the order _pos_embed puts them before the patches
POS_EMBED_ADDED = 'pos_embed as _pos_embed adds it'   # the forward tensor: what the tokens get, prefix included
BILINEAR_AT_CREATE = ('flexi', 'radio')   # parts of a model name, as _create_vision_transformer tests them
ALIGN_CORNERS_AT_CREATE = ('base_patch16_radio_v3', 'huge_patch16_radio_v3')   # timm's _RADIO_ALIGN_CORNERS


def is_hybrid(patch_embed: nn.Module) -> bool:
    """A ``HybridEmbed``: a CNN's feature map projected to patches (timm.layers from 1.0, before that
    vision_transformer_hybrid)."""
    classes = tuple(filter(None, map(timm_class, ('timm.layers.HybridEmbed',
                                                  'timm.models.vision_transformer_hybrid.HybridEmbed'))))
    return bool(classes) and isinstance(patch_embed, classes)


@register_family
class VitFamily(Family):
    name = 'vit'
    model_classes = ('timm.models.vision_transformer.VisionTransformer',)
    origins = ('timm', 'openai_clip', 'open_clip', 'dinov2', 'big_vision', 'hub', 'file')
    trigger_kinds = GEOMETRIC + ('patch', 'img_pad')

    def claim(self, probe):
        why_not = super().claim(probe)
        if why_not is not None:
            return why_not
        embed = probe.model.patch_embed
        if is_hybrid(embed):
            return ''   # vit_hybrid's
        patch_embed = timm_class('timm.layers.PatchEmbed')
        if patch_embed and not isinstance(embed, patch_embed):
            return f'its patch embedding is a {type(embed).__name__}, not the PatchEmbed the vit oracle models'
        if any(part in probe.name for part in ALIGN_CORNERS_AT_CREATE):
            return ("timm resamples its position embedding at create time with align_corners=True (RADIO v3's "
                    "own resize), which the vit oracle's create path does not model")
        return None

    def miniatures(self, model):
        """One block of two 32-wide heads (rope and attention pools need heads a multiple of 4 wide), else one
        block of its own width (a width the model ties to something else, e.g. a projection)."""
        return {'depth': 1, 'embed_dim': 64, 'num_heads': 2}, {'depth': 1}, {'depth': 2}

    def create_resampling(self, model_name, checkpoint):
        """timm loads FlexiViT and RADIO variants resampling bilinear without antialiasing, whatever the file's
        layout (``_create_vision_transformer``: the pretrained weights prefer it)."""
        if any(part in model_name for part in BILINEAR_AT_CREATE):
            return 'bilinear', False
        return super().create_resampling(model_name, checkpoint)

    def geometry(self, model: nn.Module) -> Geometry:
        pe = model.patch_embed
        num_prefix = getattr(model, 'num_prefix_tokens', 1)
        return Geometry(
            img_size=to_size(pe.img_size), patch_size=to_size(pe.patch_size), grid_size=to_size(pe.grid_size),
            embed_dim=model.embed_dim, num_features=model.num_features, num_classes=model.num_classes,
            num_prefix_tokens=num_prefix,
            pos_prefix_tokens=0 if getattr(model, 'no_embed_class', False) else num_prefix,
            stage_depths=(len(model.blocks),), img_pad=bool(getattr(pe, 'dynamic_img_pad', False)),
        )

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        """The target's grid of patches; built with ``dynamic_img_pad``, of the input padded to whole patches."""
        patch = to_size(target.patch_size) if target.patch_size else source.patch_size
        size = padded_size(target.img_size, patch) if source.img_pad else target.img_size
        grid = (size[0] // patch[0], size[1] // patch[1])
        return dataclasses.replace(source, img_size=target.img_size, patch_size=patch, grid_size=grid)

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        tokens = geometry.num_prefix_tokens + geometry.grid_size[0] * geometry.grid_size[1]
        return {
            'forward_features': (batch, tokens, geometry.embed_dim),
            'logits': (batch, geometry.num_classes or geometry.num_features),
            'forward_intermediates': [(batch, geometry.embed_dim, *geometry.grid_size)] * geometry.stage_depths[0],
        }

    def dynamic_reference(self, native, spec, source, computed, weights):
        """The model built at the target size (timm's static path), carrying the harness's resample; built with
        ``dynamic_img_pad``, at the padded size and fed inputs the harness pads (:meth:`padded_reference`)."""
        heads = head_kwargs(native)
        if computed.img_pad:
            return self.padded_reference(spec, computed, weights, heads)
        return model_carrying(spec.name, {**spec.kwargs, **heads, 'img_size': computed.img_size}, weights)

    def padded_reference(self, spec, computed: Geometry, weights, heads: dict[str, Any]) -> nn.Module:
        """What a ``dynamic_img_pad`` model computes at ``computed``: the model built without padding at the
        padded size, each input zero-padded right and bottom by the harness first."""
        size = padded_size(computed.img_size, computed.patch_size)
        kwargs = {k: v for k, v in spec.kwargs.items() if k != 'dynamic_img_pad'}
        model = model_carrying(spec.name, {**kwargs, **heads, 'img_size': size}, weights)
        return PaddedInput(model, computed.patch_size)

    def forward_tensors(self, model, computed):
        """The position embedding the tokens of a ``computed``-grid input get (prefix rows included), as the
        model's own ``_pos_embed`` resamples and adds it (:func:`pos_embed_pass`)."""
        if getattr(model, 'pos_embed', None) is None:
            return {}
        added, _ = pos_embed_pass(model, computed.grid_size)
        return {POS_EMBED_ADDED: added}

    def expected_forward_tensors(self, weights, spec, source, computed):
        """The harness's resampled ``pos_embed``; a model that keeps no position for its prefix tokens
        (``no_embed_class``) adds nothing to them."""
        pos_embed = weights.get('pos_embed')
        if pos_embed is None:
            return {}
        unembedded = computed.num_prefix_tokens - computed.pos_prefix_tokens
        zeros = pos_embed.new_zeros(1, unembedded, pos_embed.shape[-1])
        return {POS_EMBED_ADDED: torch.cat([zeros, pos_embed.reshape(1, -1, pos_embed.shape[-1])], dim=1)}

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        out = super().resample_state_dict(state_dict, source, target, interpolation, antialias)
        if 'pos_embed' in out and source.grid_size != target.grid_size:
            out['pos_embed'] = resample_pos_embed(
                out['pos_embed'], source.grid_size, target.grid_size, source.pos_prefix_tokens,
                interpolation=interpolation, antialias=antialias)
        return out



@torch.no_grad()
def pos_embed_pass(model: nn.Module, grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's own ``_pos_embed`` (the step of ``forward_features`` between the patch embedding and the
    blocks) on blank patch tokens of ``grid``, laid out as its patch embedding gives them (NHWC with
    ``dynamic_img_size``, else flat): so a dynamic model resamples as its forward does. Returns what was added
    to the tokens, ``(1, prefix + H * W, C)`` with the prefix tokens' own values taken off, and the rotary
    embedding it returns (Eva; None for a ViT)."""
    weight = next(model.parameters())
    tokens = weight.new_zeros(1, *grid, model.embed_dim)
    if not getattr(model, 'dynamic_img_size', False):
        tokens = tokens.flatten(1, 2)
    out = model._pos_embed(tokens)
    added, rope = out if isinstance(out, tuple) else (out, None)
    prefix = [t.reshape(1, -1, model.embed_dim) for name in PREFIX_TOKENS
              if (t := getattr(model, name, None)) is not None]
    if prefix:
        prefix = torch.cat(prefix, dim=1)
        added = torch.cat([added[:, :prefix.shape[1]] - prefix, added[:, prefix.shape[1]:]], dim=1)
    return added, rope
