"""Origin ``dinov2``: DINOv2's torch hub release, timm's names where DINOv2 shares them (timm's ``_convert_dinov2``)."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from harness.checkpoints.origins import LayoutError, StateDict, register_origin
from harness.checkpoints.origins.mapping import (
    Rule,
    convert_keys,
    filler,
    is_swiglu,
    key_rule,
    layout_keys,
    require_vit,
    save_pickle,
    timm_state,
)


def write_dinov2(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """DINOv2's hub release: timm's names plus iBOT's ``mask_token``; register models keep ``register_tokens``
    and a position embedding covering the class token, which timm folds into ``cls_token``."""
    reference = timm_state(model)
    saved = {**reference, 'mask_token': torch.zeros(1, reference['cls_token'].shape[-1])}
    if 'reg_token' in saved:
        class_pos = saved['pos_embed'].mean(dim=1, keepdim=True)
        saved['register_tokens'] = saved.pop('reg_token')
        saved['pos_embed'] = torch.cat([class_pos, saved['pos_embed']], dim=1)
        saved['cls_token'] = saved['cls_token'] - class_pos
        reference['cls_token'] = saved['cls_token'] + class_pos[:, 0]   # rounded as timm's sum rounds it
    if type(model.blocks[0].mlp).__name__ == 'GluMlp':   # the giant model's packed SwiGLU
        saved = {k.replace('mlp.fc1.', 'mlp.w12.').replace('mlp.fc2.', 'mlp.w3.'): v for k, v in saved.items()}
    torch.save(saved, path)
    return reference


_DINOV2_BLOCK = ('norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight',
                 'attn.proj.bias', 'ls1.gamma', 'norm2.weight', 'norm2.bias', 'ls2.gamma')


def _dinov2_rules(fc1: str, fc2: str) -> list[Rule]:
    """timm's names where DINOv2 shares them; register tokens and the MLP's two linears (``fc1``/``fc2``, or
    the packed SwiGLU's ``w12``/``w3``) renamed."""
    return [
        key_rule(r'cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)'),
        key_rule(r'reg_token', 'register_tokens'),
        key_rule(r'blocks\.\d+\.(' + '|'.join(map(re.escape, _DINOV2_BLOCK)) + ')'),
        key_rule(r'(blocks\.\d+\.mlp\.)fc1\.(weight|bias)', rf'\1{fc1}.\2'),
        key_rule(r'(blocks\.\d+\.mlp\.)fc2\.(weight|bias)', rf'\1{fc2}.\2'),
    ]


@register_origin('dinov2', 'DINOv2 hub layout with `mask_token` (and `register_tokens` for reg models)',
                 rank=3, families=('vit',), filename='dinov2_pretrain.pth', save=save_pickle, repro_writer=write_dinov2)
def dinov2_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """DINOv2's torch hub release (``dinov2_vits14_pretrain.pth``): a plain dict under timm's own names, except
    where DINOv2's module differs.

    It adds a ``mask_token`` (iBOT masking) and has no classifier. Register models keep ``register_tokens``
    and a position embedding that still covers the class token; timm's register models embed neither, so
    timm folds that position into ``cls_token`` on load, and the returned ``cls_token`` is that sum, rounded
    as timm rounds it. The giant model's packed SwiGLU MLP is ``w12``/``w3``.
    """
    require_vit(model, swiglu_ok=True)
    if getattr(model, 'cls_token', None) is None:
        raise LayoutError('DINOv2 releases have a class token; this model has none')
    registers = getattr(model, 'reg_token', None) is not None
    if getattr(model, 'no_embed_class', False) != registers:
        raise LayoutError('DINOv2 embeds the class position in pos_embed; timm converts that only for register '
                          'models without it (no_embed_class) and plain models with it')
    fc1, fc2 = ('w12', 'w3') if is_swiglu(model.blocks[0].mlp) else ('fc1', 'fc2')
    expected = timm_state(model)
    state = dict(expected)
    if registers:
        class_pos = state['pos_embed'].mean(dim=1, keepdim=True)   # any value works; this one looks trained
        state['pos_embed'] = torch.cat([class_pos, state['pos_embed']], dim=1)
        state['cls_token'] = state['cls_token'] - class_pos
        expected['cls_token'] = state['cls_token'] + state['pos_embed'][:, 0]   # timm's _convert_dinov2
    mlp = [f'mlp.{fc}.{p}' for fc in (fc1, fc2) for p in ('weight', 'bias')]
    top = ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias', 'norm.weight',
           'norm.bias', *(['register_tokens'] if registers else [])]
    saved = convert_keys(state, _dinov2_rules(fc1, fc2),
                     layout_keys(top, 'blocks.{}.', [*_DINOV2_BLOCK, *mlp], len(model.blocks)))
    saved['mask_token'] = filler((1, model.embed_dim), torch.Generator().manual_seed(0))
    return saved, expected
