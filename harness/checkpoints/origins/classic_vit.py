"""Origin ``classic_vit``: a classic timm ViT's state dict loaded into a NaFlexVit, converted by NaFlexVit's
``checkpoint_filter_fn``."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from harness.checkpoints.origins import LayoutError, StateDict, register_origin
from harness.checkpoints.origins.mapping import save_safetensors, timm_state
from harness.families.base import timm_class


def classic_vit_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A NaFlexVit's weights as a classic ViT's state dict, and the NaFlexVit state dict timm converts it back to.

    Repro scripts carry it (:func:`write_classic_vit`), so it names only what a script can import.
    """
    expected = timm_state(model)
    embeds = model.embeds
    saved = {}
    for key, value in expected.items():
        if key == 'embeds.pos_embed':
            saved['pos_embed'] = value.flatten(1, 2)
        elif key == 'embeds.proj.weight' and value.ndim == 2:   # linear over (ph, pw, C) patches -> conv kernel
            saved['patch_embed.proj.weight'] = value.reshape(value.shape[0], *embeds.patch_size, -1).permute(0, 3, 1, 2)
        elif key in ('embeds.cls_token', 'embeds.reg_token'):
            saved[key.removeprefix('embeds.')] = value
        else:
            saved[re.sub(r'^embeds\.', 'patch_embed.', key)] = value
    if 'cls_token' in saved and 'reg_token' not in saved and 'pos_embed' in saved:
        class_pos = saved['pos_embed'].mean(dim=1, keepdim=True)   # any value works; this one looks trained
        saved['pos_embed'] = torch.cat([class_pos, saved['pos_embed']], dim=1)
        saved['cls_token'] = saved['cls_token'] - class_pos
        expected['embeds.cls_token'] = saved['cls_token'] + class_pos   # timm's fold, rounded as it rounds
    return {k: v.contiguous() for k, v in saved.items()}, expected


def write_classic_vit(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A classic timm ViT's state dict for a NaFlexVit, safetensors: flat ``pos_embed`` (with the class position,
    which timm folds into ``cls_token``), a conv patch kernel."""
    saved, reference = classic_vit_state(model)
    save_file(saved, str(path))
    return reference


@register_origin('classic_vit', "a classic timm ViT's state dict (flat pos_embed, conv patch kernel) for a NaFlexVit",
                 rank=6, families=('naflexvit',), filename='model.safetensors', save=save_safetensors,
                 repro_writer=write_classic_vit)
def classic_vit_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """A classic timm ``VisionTransformer`` release for a NaFlexVit: what NaFlexVit's ``checkpoint_filter_fn``
    converts (and how ``TIMM_USE_NAFLEXVIT=true`` loads timm's ``vit_*`` hub weights into NaFlexVit).

    The position embedding is the flat ``(1, [class +] H*W, C)`` sequence, the patch embedding a conv kernel
    ``(O, C, ph, pw)`` under ``patch_embed.``; the rest keeps its names. Like timm's classic ViTs, a model with
    a class token and no registers embeds the class position (timm folds it into ``cls_token``, and the returned
    ``cls_token`` is that sum, rounded as timm rounds it); register models embed the grid's only. Factorized
    tables have no place in the layout.
    """
    naflexvit = timm_class('timm.models.naflexvit.NaFlexVit')
    if naflexvit is None or not isinstance(model, naflexvit):
        raise LayoutError(f'the layout is a classic ViT release for a NaFlexVit, not a {type(model).__name__}')
    embeds = model.embeds
    if getattr(embeds, 'pos_embed_y', None) is not None:
        raise LayoutError('a classic ViT has one position embedding; the model factorizes it per axis')
    return classic_vit_state(model)
