"""Origin ``openai_clip``: OpenAI CLIP's released weights, the vision tower under ``visual.*`` beside a text tower.

timm converts it with ``_convert_openai_clip``; :mod:`harness.checkpoints.origins.open_clip` wraps the same
state dict as OpenCLIP's training script saves it.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from harness.checkpoints.origins import LayoutError, StateDict, register_origin
from harness.checkpoints.origins.mapping import (
    convert_keys,
    drop_rule,
    filler,
    key_rule,
    layout_keys,
    require_class_position,
    require_vit,
    save_pickle,
    timm_state,
)

_RESBLOCK = 'visual.transformer.resblocks.'
_CLIP_VISUAL_RULES = [
    key_rule(r'cls_token', 'visual.class_embedding', lambda v: v[0, 0]),          # (1, 1, C) -> (C,)
    key_rule(r'pos_embed', 'visual.positional_embedding', lambda v: v[0]),        # (1, 1 + N, C) -> (1 + N, C)
    key_rule(r'patch_embed\.proj\.weight', 'visual.conv1.weight'),
    key_rule(r'norm_pre\.(weight|bias)', r'visual.ln_pre.\1'),
    key_rule(r'norm\.(weight|bias)', r'visual.ln_post.\1'),
    key_rule(r'blocks\.(\d+)\.norm([12])\.(weight|bias)', _RESBLOCK + r'\1.ln_\2.\3'),
    key_rule(r'blocks\.(\d+)\.attn\.qkv\.(weight|bias)', _RESBLOCK + r'\1.attn.in_proj_\2'),
    key_rule(r'blocks\.(\d+)\.attn\.proj\.(weight|bias)', _RESBLOCK + r'\1.attn.out_proj.\2'),
    key_rule(r'blocks\.(\d+)\.mlp\.fc1\.(weight|bias)', _RESBLOCK + r'\1.mlp.c_fc.\2'),
    key_rule(r'blocks\.(\d+)\.mlp\.fc2\.(weight|bias)', _RESBLOCK + r'\1.mlp.c_proj.\2'),
    key_rule(r'head\.weight', 'visual.proj', lambda v: v.T),                      # Linear (out, C) -> (C, out)
    drop_rule(r'head\.bias'),                                                      # proj has none: timm loads zeros
]
_CLIP_VISUAL_TOP = ('class_embedding', 'positional_embedding', 'conv1.weight', 'ln_pre.weight', 'ln_pre.bias',
                    'ln_post.weight', 'ln_post.bias', 'proj')
# CLIP's text tower, kept small: real key names and context length, tiny width and vocabulary
_TEXT_WIDTH, _TEXT_LAYERS, _TEXT_VOCAB, _TEXT_CONTEXT = 32, 1, 1000, 77


def _clip_block_shapes(width: int) -> dict[str, tuple[int, ...]]:
    """CLIP's residual attention block (``nn.MultiheadAttention``, ``c_fc``/``c_proj`` MLP); both towers use it."""
    return {
        'ln_1.weight': (width,), 'ln_1.bias': (width,),
        'attn.in_proj_weight': (3 * width, width), 'attn.in_proj_bias': (3 * width,),
        'attn.out_proj.weight': (width, width), 'attn.out_proj.bias': (width,),
        'ln_2.weight': (width,), 'ln_2.bias': (width,),
        'mlp.c_fc.weight': (4 * width, width), 'mlp.c_fc.bias': (4 * width,),
        'mlp.c_proj.weight': (width, 4 * width), 'mlp.c_proj.bias': (width,),
    }


def _visual_tower(model: nn.Module) -> tuple[StateDict, StateDict]:
    """The vision tower under OpenAI's names, and the timm state dict timm converts it back to."""
    require_vit(model)
    require_class_position(model)
    expected = timm_state(model)
    keys = layout_keys(['visual.' + k for k in _CLIP_VISUAL_TOP], _RESBLOCK + '{}.', _clip_block_shapes(1).keys(),
                        len(model.blocks))
    visual = convert_keys(expected, _CLIP_VISUAL_RULES, keys)
    if 'head.bias' in expected:
        expected['head.bias'] = torch.zeros_like(expected['head.bias'])
    return visual, expected


def _clip_text_tower(embed_dim: int) -> StateDict:
    """A text tower and ``logit_scale`` under CLIP's names, filler values: timm must ignore all of it."""
    generator = torch.Generator().manual_seed(0)
    shapes = {'positional_embedding': (_TEXT_CONTEXT, _TEXT_WIDTH), 'text_projection': (_TEXT_WIDTH, embed_dim),
              'token_embedding.weight': (_TEXT_VOCAB, _TEXT_WIDTH),
              'ln_final.weight': (_TEXT_WIDTH,), 'ln_final.bias': (_TEXT_WIDTH,)}
    shapes.update({f'transformer.resblocks.{i}.{k}': s for i in range(_TEXT_LAYERS)
                   for k, s in _clip_block_shapes(_TEXT_WIDTH).items()})
    text = {k: filler(s, generator) for k, s in shapes.items()}
    text['logit_scale'] = torch.tensor(math.log(100.0))   # where trained CLIP models sit (the clamp value)
    return text


def clip_state(model: nn.Module) -> tuple[StateDict, StateDict]:
    """A whole CLIP ``state_dict()`` (vision tower, text tower, ``logit_scale``) and the timm state dict."""
    visual, expected = _visual_tower(model)
    return {**visual, **_clip_text_tower(visual['visual.proj'].shape[1])}, expected


# --- the compact writer a repro script carries --------------------------------------------------------------

# timm's names -> OpenAI CLIP's, replaced in this order (the inverse of timm's _convert_openai_clip)
CLIP_NAMES = (('patch_embed.proj', 'conv1'), ('blocks.', 'transformer.resblocks.'), ('norm_pre', 'ln_pre'),
              ('norm1', 'ln_1'), ('norm2', 'ln_2'), ('attn.qkv.', 'attn.in_proj_'), ('attn.proj', 'attn.out_proj'),
              ('mlp.fc1', 'mlp.c_fc'), ('mlp.fc2', 'mlp.c_proj'))


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


@register_origin('openai_clip', 'OpenAI CLIP layout, `visual.*` keys beside a text tower',
                 rank=1, families=('vit',), filename='open_clip_pytorch_model.bin', save=save_pickle,
                 repro_writer=write_openai_clip)
def openai_clip_layout(model: nn.Module) -> tuple[dict, StateDict]:
    """OpenAI CLIP's released weights: the JIT archive's ``state_dict()`` saved as a plain dict.

    Besides both towers it holds the three ints OpenAI's ``build_model`` deletes (``input_resolution``,
    ``context_length``, ``vocab_size``), so the model must be square. The layout's ``proj`` has no bias;
    timm loads ``head.bias`` as zeros and the returned state dict says so. One deliberate difference:
    OpenAI stores most weights in float16, these stay float32 so the round trip is exact.
    """
    state, expected = clip_state(model)
    height, width = model.patch_embed.img_size
    if height != width:
        raise LayoutError(f'OpenAI CLIP records one square input_resolution; the model is {height}x{width}')
    ints = {'input_resolution': height, 'context_length': _TEXT_CONTEXT, 'vocab_size': _TEXT_VOCAB}
    return {**state, **{k: torch.tensor(v) for k, v in ints.items()}}, expected


