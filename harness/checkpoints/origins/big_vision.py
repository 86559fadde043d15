"""Origin ``big_vision``: Google's JAX ViT release (AugReg ``.npz``), read by timm's ``_load_weights``."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from harness.checkpoints.origins import StateDict, register_origin
from harness.checkpoints.origins.mapping import (
    Rule,
    convert_keys,
    key_rule,
    layout_keys,
    require_class_position,
    require_vit,
    save_npz,
    timm_state,
)


def write_big_vision(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """Google's AugReg ``.npz``: Flax paths, JAX orientations (Dense kernels (in, out), the patch conv HWIO,
    attention kernels split per head); timm reads it with ``custom_load``."""
    s, heads = timm_state(model), model.blocks[0].attn.num_heads
    out = {'embedding/kernel': s['patch_embed.proj.weight'].permute(2, 3, 1, 0), 'embedding/bias':
           s['patch_embed.proj.bias'], 'cls': s['cls_token'], 'Transformer/posembed_input/pos_embedding':
           s['pos_embed'], 'Transformer/encoder_norm/scale': s['norm.weight'],
           'Transformer/encoder_norm/bias': s['norm.bias'], 'head/kernel': s['head.weight'].T,
           'head/bias': s['head.bias']}
    for i in range(len(model.blocks)):
        block, flax = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
        for norm, n in (('norm1', 0), ('norm2', 2)):
            out[f'{flax}LayerNorm_{n}/scale'] = s[f'{block}{norm}.weight']
            out[f'{flax}LayerNorm_{n}/bias'] = s[f'{block}{norm}.bias']
        for fc, n in (('fc1', 0), ('fc2', 1)):
            out[f'{flax}MlpBlock_3/Dense_{n}/kernel'] = s[f'{block}mlp.{fc}.weight'].T
            out[f'{flax}MlpBlock_3/Dense_{n}/bias'] = s[f'{block}mlp.{fc}.bias']
        attention = f'{flax}MultiHeadDotProductAttention_1/'
        qkv = zip(s[f'{block}attn.qkv.weight'].chunk(3), s[f'{block}attn.qkv.bias'].chunk(3))
        for name, (weight, bias) in zip(('query', 'key', 'value'), qkv):
            out[f'{attention}{name}/kernel'] = weight.T.reshape(weight.shape[1], heads, -1)
            out[f'{attention}{name}/bias'] = bias.reshape(heads, -1)
        proj = s[f'{block}attn.proj.weight']
        out[f'{attention}out/kernel'] = proj.T.reshape(heads, -1, proj.shape[0])
        out[f'{attention}out/bias'] = s[f'{block}attn.proj.bias']
    np.savez(path, **{k: v.contiguous().numpy() for k, v in out.items()})
    return s


_LAYER_NORM = {'weight': 'scale', 'bias': 'bias'}
_DENSE = {'weight': 'kernel', 'bias': 'bias'}
_ENCODER_BLOCK = r'Transformer/encoderblock_\1/'
_MHA = 'MultiHeadDotProductAttention_1/'
_BIG_VISION_TOP = ('embedding/kernel', 'embedding/bias', 'cls', 'Transformer/posembed_input/pos_embedding',
                   'Transformer/encoder_norm/scale', 'Transformer/encoder_norm/bias', 'head/kernel', 'head/bias')
_BIG_VISION_BLOCK = ('LayerNorm_0/scale', 'LayerNorm_0/bias', 'LayerNorm_2/scale', 'LayerNorm_2/bias',
                     *(f'{_MHA}{n}/{p}' for n in ('query', 'key', 'value', 'out') for p in ('kernel', 'bias')),
                     *(f'MlpBlock_3/Dense_{i}/{p}' for i in (0, 1) for p in ('kernel', 'bias')))


def _flax(module: str, names: dict[str, str]) -> Callable[[re.Match], str]:
    """Flax name of the matched torch parameter (group ``p``) inside ``module`` (a template over the match)."""
    return lambda m: f"{m.expand(module)}/{names[m['p']]}"


def _dense(v: Tensor) -> Tensor:
    return v.T if v.ndim == 2 else v                       # Linear (out, in) -> Dense (in, out)


def _conv(v: Tensor) -> Tensor:
    return v.permute(2, 3, 1, 0) if v.ndim == 4 else v     # Conv2d OIHW -> HWIO


def _split_qkv(heads: int) -> Callable[[re.Match, Tensor], StateDict]:
    """timm's fused qkv (3 * heads * head_dim rows) -> Flax query/key/value kernels (C, heads, head_dim)
    and biases (heads, head_dim)."""
    def convert(m: re.Match, v: Tensor) -> StateDict:
        prefix = f'Transformer/encoderblock_{m[1]}/{_MHA}'
        return {f'{prefix}{name}/{_DENSE[m["p"]]}': part.movedim(0, -1).reshape(*part.shape[1:], heads, -1)
                for name, part in zip(('query', 'key', 'value'), v.chunk(3))}
    return convert


def _big_vision_rules(heads: int) -> list[Rule]:
    """timm's ViT keys to AugReg's Flax paths; attention tensors need the head count to be split."""
    def out_proj(v: Tensor) -> Tensor:                     # (C, heads * head_dim) -> (heads, head_dim, C)
        return v.reshape(v.shape[0], heads, -1).permute(1, 2, 0) if v.ndim == 2 else v

    return [
        key_rule(r'patch_embed\.proj\.(?P<p>weight|bias)', _flax('embedding', _DENSE), _conv),
        key_rule(r'cls_token', 'cls'),
        key_rule(r'pos_embed', 'Transformer/posembed_input/pos_embedding'),
        key_rule(r'norm\.(?P<p>weight|bias)', _flax('Transformer/encoder_norm', _LAYER_NORM)),
        key_rule(r'head\.(?P<p>weight|bias)', _flax('head', _DENSE), _dense),
        key_rule(r'blocks\.(\d+)\.norm1\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'LayerNorm_0', _LAYER_NORM)),
        key_rule(r'blocks\.(\d+)\.norm2\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'LayerNorm_2', _LAYER_NORM)),
        Rule(re.compile(r'blocks\.(\d+)\.attn\.qkv\.(?P<p>weight|bias)'), _split_qkv(heads)),
        key_rule(r'blocks\.(\d+)\.attn\.proj\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + _MHA + 'out', _DENSE),
              out_proj),
        key_rule(r'blocks\.(\d+)\.mlp\.fc1\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'MlpBlock_3/Dense_0', _DENSE),
              _dense),
        key_rule(r'blocks\.(\d+)\.mlp\.fc2\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'MlpBlock_3/Dense_1', _DENSE),
              _dense),
    ]


@register_origin('big_vision', "Google's JAX ViT release (.npz, `Transformer/encoderblock_N/...`)",
                 rank=4, families=('vit',), filename='big_vision.npz', custom_load=True, save=save_npz,
                 repro_writer=write_big_vision)
def big_vision_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """Google's JAX ViT release, as the AugReg ``.npz`` files timm's ``_load_weights`` reads.

    Flat Flax parameter paths (``Transformer/encoderblock_N/MultiHeadDotProductAttention_1/query/kernel``) with
    JAX's orientations: Dense kernels (in, out), the patch conv HWIO, attention kernels (C, heads, head_dim)
    and the output kernel (heads, head_dim, C). timm reads it with ``custom_load`` (``model.load_pretrained``).
    No ``pre_logits``: timm's ViT has no such layer (AugReg releases have none either).
    """
    require_vit(model)
    require_class_position(model)
    expected = timm_state(model)
    keys = layout_keys(_BIG_VISION_TOP, 'Transformer/encoderblock_{}/', _BIG_VISION_BLOCK, len(model.blocks))
    return convert_keys(expected, _big_vision_rules(model.blocks[0].attn.num_heads), keys), expected
