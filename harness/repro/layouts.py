"""Compact layout writers a repro script carries: a timm model saved as one origin's releases store it.

:mod:`harness.checkpoints.layouts` is the harness's strict version (every tensor placed or refused, what a
release carries beside the weights written too, proven by round-trip tests); a script needs only what makes
timm's conversion for the origin run, in a few readable lines. Each writer saves ``model`` to ``path`` and
returns the timm state dict a correct loader recovers from the file (the reference that reload and fidelity
compare with). Like :mod:`harness.repro.steps`, this module imports only what a script may.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from harness.checkpoints.layouts import classic_vit_layout

# timm's names -> OpenAI CLIP's, replaced in this order (the inverse of timm's _convert_openai_clip)
CLIP_NAMES = (('patch_embed.proj', 'conv1'), ('blocks.', 'transformer.resblocks.'), ('norm_pre', 'ln_pre'),
              ('norm1', 'ln_1'), ('norm2', 'ln_2'), ('attn.qkv.', 'attn.in_proj_'), ('attn.proj', 'attn.out_proj'),
              ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj'))


def timm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as contiguous copies, as a file holds them."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def write_timm(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """timm's own layout, safetensors (timm picks the reader by the .safetensors suffix)."""
    reference = timm_state(model)
    save_file(reference, str(path))
    return reference


def clip_visual(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The ViT under OpenAI CLIP's ``visual.*`` names, and what timm loads it as (CLIP's ``proj`` has no bias:
    timm loads zeros)."""
    reference = timm_state(model)
    if 'head.bias' in reference:
        reference['head.bias'] = torch.zeros_like(reference['head.bias'])
    visual = {}
    for key, value in reference.items():
        if key == 'cls_token':
            visual['class_embedding'] = value[0, 0]
        elif key == 'pos_embed':
            visual['positional_embedding'] = value[0]
        elif key == 'head.weight':
            visual['proj'] = value.T.contiguous()
        elif key.startswith('norm.'):
            visual[key.replace('norm.', 'ln_post.')] = value
        elif key != 'head.bias':
            for timm_name, clip_name in CLIP_NAMES:
                key = key.replace(timm_name, clip_name)
            visual[key] = value
    return {f'visual.{k}': v for k, v in visual.items()}, reference


def write_openai_clip(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """OpenAI CLIP's released ``state_dict`` (its vision tower: timm ignores the text tower)."""
    visual, reference = clip_visual(model)
    torch.save(visual, path)
    return reference


def write_open_clip(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """An OpenCLIP training checkpoint: the DDP-wrapped model (``module.`` prefix) under ``state_dict``."""
    visual, reference = clip_visual(model)
    torch.save({'epoch': 32, 'state_dict': {f'module.{k}': v for k, v in visual.items()}}, path)
    return reference


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


def write_microsoft(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The original Swin repository's release: ``{'model': ...}``, each patch merge at the end of the stage
    before timm's (its ``layers.i.downsample`` feeds stage i + 1), the classifier a bare ``head``."""
    reference = timm_state(model)
    saved = {re.sub(r'layers\.(\d+)\.downsample', lambda m: f'layers.{int(m[1]) - 1}.downsample', k)
             .replace('head.fc.', 'head.'): v for k, v in reference.items()}
    torch.save({'model': saved}, path)
    return reference


def write_classic_vit(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """A classic timm ViT release for a NaFlexVit (flat position embedding, conv patch kernel), written by the
    harness's own layout (:func:`harness.checkpoints.layouts.classic_vit_layout`), safetensors."""
    saved, reference = classic_vit_layout(model)
    save_file(saved, str(path))
    return reference


WRITERS: dict[str, Callable[[nn.Module, Path], dict[str, torch.Tensor]]] = {
    'timm': write_timm, 'openai_clip': write_openai_clip, 'open_clip': write_open_clip, 'dinov2': write_dinov2,
    'big_vision': write_big_vision, 'microsoft': write_microsoft, 'classic_vit': write_classic_vit,
}
