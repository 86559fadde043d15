"""Layout writers: a timm model's weights saved exactly as each origin's real releases store them.

A case loaded from an origin has to go through timm's own conversion for that origin (the ViT and Swin
``checkpoint_filter_fn``, ``_convert_openai_clip``, ``_convert_dinov2``, the ``.npz`` reader ``_load_weights``),
because that conversion is part of what a resize can break. No real release can be downloaded, so each
writer is the exact inverse of timm's conversion: it maps a seeded model's state dict to the origin's key
names, tensor orientations and wrapper dict, and returns the timm state dict a correct loader must recover.

Writers are strict both ways. A model tensor the layout has no place for (layer scale in an OpenAI CLIP
file, a patch-embedding bias where CLIP's ``conv1`` has none) raises :class:`LayoutError`, and so does a
tensor every release of the layout holds but the model cannot fill (``ln_pre`` for a ViT without a
pre-norm): a file timm happens to load but no release looks like would test nothing real.

What a release carries beside the weights timm reads (CLIP's text tower, DINOv2's ``mask_token``, an
optimizer state, Swin's index buffers) is written too, with fixed filler values, so the round trip also
checks that timm ignores it.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors.torch import save_file
from timm.layers import GluMlp, Mlp
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from harness.families.base import timm_class

StateDict = dict[str, Tensor]


class LayoutError(ValueError):
    """The model has tensors the layout cannot hold, or lacks tensors every file of the layout has."""


# --- mapping a timm state dict to a layout's keys ---------------------------------------------------------

@dataclass(frozen=True)
class _Rule:
    """A timm key fully matching ``pattern`` becomes what ``convert(match, tensor)`` returns (one key or more,
    or none when the layout cannot hold the tensor and timm recreates it)."""
    pattern: re.Pattern
    convert: Callable[[re.Match, Tensor], StateDict]


def _rule(pattern: str, target: str | Callable[[re.Match], str] = r'\g<0>',
          transform: Callable[[Tensor], Tensor] = lambda v: v) -> _Rule:
    """A one-to-one rule; ``target`` is a ``re`` template over the match (or a function of it)."""
    name = target if callable(target) else (lambda m: m.expand(target))
    return _Rule(re.compile(pattern), lambda m, v: {name(m): transform(v)})


def _drop(pattern: str) -> _Rule:
    """A rule for a tensor the layout has no place for and timm recreates on load (the writer says how)."""
    return _Rule(re.compile(pattern), lambda m, v: {})


_BLOCK_INDEX = re.compile(r'(?<=blocks\.)\d+|(?<=block_)\d+')


def _listing(keys: Iterable[str]) -> str:
    """Keys for an error message, each kind once (block indices collapsed to N)."""
    return ', '.join(dict.fromkeys(_BLOCK_INDEX.sub('N', k) for k in keys))


def _convert(state: StateDict, rules: list[_Rule], layout_keys: Iterable[str] | None = None) -> StateDict:
    """``state`` in the layout's names: each key through the first rule matching it.

    Raises LayoutError for keys no rule takes and, when ``layout_keys`` (the layout's full key set) is
    given, for layout keys the model produced nothing for. The result owns contiguous copies, as a file would.
    """
    out, homeless = {}, []
    for key, value in state.items():
        for rule in rules:
            if match := rule.pattern.fullmatch(key):
                out.update(rule.convert(match, value))
                break
        else:
            homeless.append(key)
    missing = [k for k in layout_keys or () if k not in out]
    problems = []
    if homeless:
        problems.append(f'the layout has no place for {_listing(homeless)}')
    if missing:
        problems.append(f'every file of the layout holds {_listing(missing)}, which the model lacks')
    if problems:
        raise LayoutError('; '.join(problems))
    return {k: v.clone(memory_format=torch.contiguous_format) for k, v in out.items()}


def _layout_keys(top: Iterable[str], block_prefix: str, block_keys: Iterable[str], depth: int) -> list[str]:
    """A layout's full key set: ``top`` plus ``block_keys`` under ``block_prefix.format(i)`` for each block."""
    block_keys = tuple(block_keys)
    return [*top, *(block_prefix.format(i) + k for i in range(depth) for k in block_keys)]


def _state_dict(model: nn.Module) -> StateDict:
    """The model's state dict as independent contiguous tensors (later changes to the model don't leak in)."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def _filler(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Weight-sized values for tensors a release carries but timm never reads."""
    return torch.randn(shape, generator=generator) * 0.02


def _is_swiglu(mlp: nn.Module) -> bool:
    """timm's ``SwiGLUPacked``: one ``fc1`` producing value and gate halves, SiLU on the first half (as DINOv2)."""
    return isinstance(mlp, GluMlp) and isinstance(mlp.act, nn.SiLU) and not mlp.gate_last


def _require_vit(model: nn.Module, swiglu_ok: bool = False) -> None:
    """The ViT layouts hold pre-norm transformer blocks with a plain two-layer MLP (DINOv2 also packed SwiGLU)."""
    if not isinstance(model, VisionTransformer):
        raise LayoutError(f'the layout holds a VisionTransformer, not a {type(model).__name__}')
    for block in model.blocks:
        if not isinstance(block, Block):
            raise LayoutError(f'the layout holds pre-norm transformer blocks, not {type(block).__name__}')
        if not (isinstance(block.mlp, Mlp) or swiglu_ok and _is_swiglu(block.mlp)):
            raise LayoutError(f"the layout's MLP cannot hold timm's {type(block.mlp).__name__}")


def _require_class_position(model: nn.Module) -> None:
    """CLIP and Google's releases embed the class token's position in front of the grid's."""
    if getattr(model, 'no_embed_class', False):
        raise LayoutError("the layout's position embedding covers the class token; the model's does not")


# --- timm ---------------------------------------------------------------------------------------------------

def timm_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """timm's own layout: ``model.state_dict()``, saved as safetensors as timm's hub releases ship it."""
    expected = _state_dict(model)
    return expected, expected


def _save_safetensors(state: StateDict, path: Path) -> None:
    """timm picks its safetensors reader by the ``.safetensors`` suffix, so the path must have it."""
    if Path(path).suffix != '.safetensors':
        raise ValueError(f'timm only reads safetensors from a .safetensors path, not {path}')
    save_file(state, str(path))


# --- OpenAI CLIP and OpenCLIP -------------------------------------------------------------------------------

_RESBLOCK = 'visual.transformer.resblocks.'
_CLIP_VISUAL_RULES = [
    _rule(r'cls_token', 'visual.class_embedding', lambda v: v[0, 0]),          # (1, 1, C) -> (C,)
    _rule(r'pos_embed', 'visual.positional_embedding', lambda v: v[0]),        # (1, 1 + N, C) -> (1 + N, C)
    _rule(r'patch_embed\.proj\.weight', 'visual.conv1.weight'),
    _rule(r'norm_pre\.(weight|bias)', r'visual.ln_pre.\1'),
    _rule(r'norm\.(weight|bias)', r'visual.ln_post.\1'),
    _rule(r'blocks\.(\d+)\.norm([12])\.(weight|bias)', _RESBLOCK + r'\1.ln_\2.\3'),
    _rule(r'blocks\.(\d+)\.attn\.qkv\.(weight|bias)', _RESBLOCK + r'\1.attn.in_proj_\2'),
    _rule(r'blocks\.(\d+)\.attn\.proj\.(weight|bias)', _RESBLOCK + r'\1.attn.out_proj.\2'),
    _rule(r'blocks\.(\d+)\.mlp\.fc1\.(weight|bias)', _RESBLOCK + r'\1.mlp.c_fc.\2'),
    _rule(r'blocks\.(\d+)\.mlp\.fc2\.(weight|bias)', _RESBLOCK + r'\1.mlp.c_proj.\2'),
    _rule(r'head\.weight', 'visual.proj', lambda v: v.T),                      # Linear (out, C) -> (C, out)
    _drop(r'head\.bias'),                                                      # proj has none: timm loads zeros
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


def _clip_visual(model: nn.Module) -> tuple[StateDict, StateDict]:
    """The vision tower under OpenAI's names, and the timm state dict timm converts it back to."""
    _require_vit(model)
    _require_class_position(model)
    expected = _state_dict(model)
    keys = _layout_keys(['visual.' + k for k in _CLIP_VISUAL_TOP], _RESBLOCK + '{}.', _clip_block_shapes(1).keys(),
                        len(model.blocks))
    visual = _convert(expected, _CLIP_VISUAL_RULES, keys)
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
    text = {k: _filler(s, generator) for k, s in shapes.items()}
    text['logit_scale'] = torch.tensor(math.log(100.0))   # where trained CLIP models sit (the clamp value)
    return text


def _clip_state(model: nn.Module) -> tuple[StateDict, StateDict]:
    """A whole CLIP ``state_dict()`` (vision tower, text tower, ``logit_scale``) and the timm state dict."""
    visual, expected = _clip_visual(model)
    return {**visual, **_clip_text_tower(visual['visual.proj'].shape[1])}, expected


def openai_clip_layout(model: nn.Module) -> tuple[dict, StateDict]:
    """OpenAI CLIP's released weights: the JIT archive's ``state_dict()`` saved as a plain dict.

    Besides both towers it holds the three ints OpenAI's ``build_model`` deletes (``input_resolution``,
    ``context_length``, ``vocab_size``), so the model must be square. The layout's ``proj`` has no bias;
    timm loads ``head.bias`` as zeros and the returned state dict says so. One deliberate difference:
    OpenAI stores most weights in float16, these stay float32 so the round trip is exact.
    """
    state, expected = _clip_state(model)
    height, width = model.patch_embed.img_size
    if height != width:
        raise LayoutError(f'OpenAI CLIP records one square input_resolution; the model is {height}x{width}')
    ints = {'input_resolution': height, 'context_length': _TEXT_CONTEXT, 'vocab_size': _TEXT_VOCAB}
    return {**state, **{k: torch.tensor(v) for k, v in ints.items()}}, expected


def open_clip_layout(model: nn.Module) -> tuple[dict, StateDict]:
    """An OpenCLIP training checkpoint (``epoch_latest.pt``) of the OpenAI-style model.

    OpenCLIP's ``VisionTransformer`` uses OpenAI's key names; the training script saves the DDP-wrapped
    model (``module.`` prefix) under ``state_dict`` beside ``epoch``, ``name`` and the optimizer state.
    """
    state, expected = _clip_state(model)
    return {'epoch': 32, 'name': 'ViT-B-16-quickgelu-lr_0.0005-b_256',
            'state_dict': {f'module.{k}': v for k, v in state.items()},
            'optimizer': _open_clip_optimizer(state)}, expected


def _open_clip_optimizer(state: StateDict) -> dict:
    """OpenCLIP's AdamW ``state_dict()``: gains, biases and ``logit_scale`` without weight decay.

    The per-parameter moments are left out: they would triple the cached file and timm reads none of it.
    """
    no_decay = [i for i, (k, v) in enumerate(state.items())
                if v.ndim < 2 or any(n in k for n in ('ln', 'bias', 'logit_scale'))]
    decay = sorted(set(range(len(state))) - set(no_decay))
    adamw = dict(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, amsgrad=False, maximize=False, foreach=None,
                 capturable=False, differentiable=False, fused=None)
    return {'state': {}, 'param_groups': [{**adamw, 'weight_decay': 0.0, 'params': no_decay},
                                          {**adamw, 'weight_decay': 0.2, 'params': decay}]}


# --- DINOv2 -------------------------------------------------------------------------------------------------

_DINOV2_BLOCK = ('norm1.weight', 'norm1.bias', 'attn.qkv.weight', 'attn.qkv.bias', 'attn.proj.weight',
                 'attn.proj.bias', 'ls1.gamma', 'norm2.weight', 'norm2.bias', 'ls2.gamma')


def _dinov2_rules(fc1: str, fc2: str) -> list[_Rule]:
    """timm's names where DINOv2 shares them; register tokens and the MLP's two linears (``fc1``/``fc2``, or
    the packed SwiGLU's ``w12``/``w3``) renamed."""
    return [
        _rule(r'cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)'),
        _rule(r'reg_token', 'register_tokens'),
        _rule(r'blocks\.\d+\.(' + '|'.join(map(re.escape, _DINOV2_BLOCK)) + ')'),
        _rule(r'(blocks\.\d+\.mlp\.)fc1\.(weight|bias)', rf'\1{fc1}.\2'),
        _rule(r'(blocks\.\d+\.mlp\.)fc2\.(weight|bias)', rf'\1{fc2}.\2'),
    ]


def dinov2_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """DINOv2's torch hub release (``dinov2_vits14_pretrain.pth``): a plain dict under timm's own names, except
    where DINOv2's module differs.

    It adds a ``mask_token`` (iBOT masking) and has no classifier. Register models keep ``register_tokens``
    and a position embedding that still covers the class token; timm's register models embed neither, so
    timm folds that position into ``cls_token`` on load, and the returned ``cls_token`` is that sum, rounded
    as timm rounds it. The giant model's packed SwiGLU MLP is ``w12``/``w3``.
    """
    _require_vit(model, swiglu_ok=True)
    registers = getattr(model, 'reg_token', None) is not None
    if getattr(model, 'no_embed_class', False) != registers:
        raise LayoutError('DINOv2 embeds the class position in pos_embed; timm converts that only for register '
                          'models without it (no_embed_class) and plain models with it')
    fc1, fc2 = ('w12', 'w3') if _is_swiglu(model.blocks[0].mlp) else ('fc1', 'fc2')
    expected = _state_dict(model)
    state = dict(expected)
    if registers:
        class_pos = state['pos_embed'].mean(dim=1, keepdim=True)   # any value works; this one looks trained
        state['pos_embed'] = torch.cat([class_pos, state['pos_embed']], dim=1)
        state['cls_token'] = state['cls_token'] - class_pos
        expected['cls_token'] = state['cls_token'] + state['pos_embed'][:, 0]   # timm's _convert_dinov2
    mlp = [f'mlp.{fc}.{p}' for fc in (fc1, fc2) for p in ('weight', 'bias')]
    top = ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias', 'norm.weight',
           'norm.bias', *(['register_tokens'] if registers else [])]
    saved = _convert(state, _dinov2_rules(fc1, fc2),
                     _layout_keys(top, 'blocks.{}.', [*_DINOV2_BLOCK, *mlp], len(model.blocks)))
    saved['mask_token'] = _filler((1, model.embed_dim), torch.Generator().manual_seed(0))
    return saved, expected


# --- Google's JAX release (.npz) ----------------------------------------------------------------------------

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


def _big_vision_rules(heads: int) -> list[_Rule]:
    """timm's ViT keys to AugReg's Flax paths; attention tensors need the head count to be split."""
    def out_proj(v: Tensor) -> Tensor:                     # (C, heads * head_dim) -> (heads, head_dim, C)
        return v.reshape(v.shape[0], heads, -1).permute(1, 2, 0) if v.ndim == 2 else v

    return [
        _rule(r'patch_embed\.proj\.(?P<p>weight|bias)', _flax('embedding', _DENSE), _conv),
        _rule(r'cls_token', 'cls'),
        _rule(r'pos_embed', 'Transformer/posembed_input/pos_embedding'),
        _rule(r'norm\.(?P<p>weight|bias)', _flax('Transformer/encoder_norm', _LAYER_NORM)),
        _rule(r'head\.(?P<p>weight|bias)', _flax('head', _DENSE), _dense),
        _rule(r'blocks\.(\d+)\.norm1\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'LayerNorm_0', _LAYER_NORM)),
        _rule(r'blocks\.(\d+)\.norm2\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'LayerNorm_2', _LAYER_NORM)),
        _Rule(re.compile(r'blocks\.(\d+)\.attn\.qkv\.(?P<p>weight|bias)'), _split_qkv(heads)),
        _rule(r'blocks\.(\d+)\.attn\.proj\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + _MHA + 'out', _DENSE),
              out_proj),
        _rule(r'blocks\.(\d+)\.mlp\.fc1\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'MlpBlock_3/Dense_0', _DENSE),
              _dense),
        _rule(r'blocks\.(\d+)\.mlp\.fc2\.(?P<p>weight|bias)', _flax(_ENCODER_BLOCK + 'MlpBlock_3/Dense_1', _DENSE),
              _dense),
    ]


def big_vision_layout(model: nn.Module) -> tuple[StateDict, StateDict]:
    """Google's JAX ViT release, as the AugReg ``.npz`` files timm's ``_load_weights`` reads.

    Flat Flax parameter paths (``Transformer/encoderblock_N/MultiHeadDotProductAttention_1/query/kernel``) with
    JAX's orientations: Dense kernels (in, out), the patch conv HWIO, attention kernels (C, heads, head_dim)
    and the output kernel (heads, head_dim, C). timm reads it with ``custom_load`` (``model.load_pretrained``).
    No ``pre_logits``: timm's ViT has no such layer (AugReg releases have none either).
    """
    _require_vit(model)
    _require_class_position(model)
    expected = _state_dict(model)
    keys = _layout_keys(_BIG_VISION_TOP, 'Transformer/encoderblock_{}/', _BIG_VISION_BLOCK, len(model.blocks))
    return _convert(expected, _big_vision_rules(model.blocks[0].attn.num_heads), keys), expected


def _save_npz(state: StateDict, path: Path) -> None:
    with open(path, 'wb') as f:
        np.savez(f, **{k: v.numpy() for k, v in state.items()})


# --- the original Swin repository ---------------------------------------------------------------------------

_MICROSOFT_RULES = [
    _rule(r'layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)',
          lambda m: f'layers.{int(m[1]) - 1}.downsample.{m[2]}'),
    _rule(r'head\.fc\.(weight|bias)', r'head.\1'),
    _rule(r'patch_embed\.(proj|norm)\.(weight|bias)|norm\.(weight|bias)'),
    _rule(r'layers\.\d+\.blocks\.\d+\.((norm[12]|attn\.qkv|attn\.proj|mlp\.fc[12])\.(weight|bias)'
          r'|attn\.relative_position_bias_table'                                     # v1
          r'|attn\.(logit_scale|q_bias|v_bias|cpb_mlp\.[02]\.(weight|bias)))'),      # V2
]
# buffers the repository registers as persistent (so its releases carry them) and timm recomputes
_MICROSOFT_BUFFERS = ('attn.relative_position_index', 'attn.relative_coords_table', 'attn_mask')


def microsoft_layout(model: nn.Module) -> tuple[dict, StateDict]:
    """The original Swin repository's release (``swin_tiny_patch4_window7_224.pth``, and for Swin-V2
    ``swinv2_tiny_patch4_window8_256.pth``): ``{'model': state_dict}``.

    The repository merges patches at the end of a stage (``layers.i.downsample`` feeds stage i+1, the last
    stage has none) where timm merges at the start of the next one; its classifier is a bare ``head``; and
    its ``relative_position_index`` and ``attn_mask`` buffers are persistent, so releases carry them (timm
    drops them and recomputes). Its 2x2 merge concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
    x[1::2, 1::2], the order timm's reshape/permute produces, so ``reduction`` and ``norm`` are stored as is.
    Swin-V2's attention adds its CPB MLP, ``logit_scale``, ``q_bias`` and ``v_bias`` (the key bias is zero and
    stored nowhere) and a persistent ``relative_coords_table``.
    """
    if not isinstance(model, (SwinTransformer, SwinTransformerV2)):
        raise LayoutError(f'the layout holds a SwinTransformer or SwinTransformerV2, not a {type(model).__name__}')
    expected = _state_dict(model)
    saved = _convert(expected, _MICROSOFT_RULES)
    saved.update({k: v.clone() for k, v in model.named_buffers() if k.endswith(_MICROSOFT_BUFFERS)})
    return {'model': saved}, expected


# --- a classic timm ViT's state dict, for NaFlexVit -------------------------------------------------------------

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
    expected = _state_dict(model)
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


def _save_pickle(contents: Any, path: Path) -> None:
    """``torch.save`` through a Python file: a write refused (a full disk) then raises with its ``OSError`` as
    the context, which :func:`harness.faults.is_disk_full` finds (torch's own writer says 'unexpected pos')."""
    with open(path, 'wb') as f:
        torch.save(contents, f)


# --- the layouts by origin ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """How one origin stores a model. ``convert`` maps a model to what the origin's file holds and returns it
    with the timm state dict a correct loader must recover; it needs no real weights, so matrix validation
    runs it on a meta-device model to find a layout that does not fit before anything is synthesized."""
    convert: Callable[[nn.Module], tuple[Any, StateDict]]
    save: Callable[[Any, Path], None] = _save_pickle

    def write(self, model: nn.Module, path: Path) -> StateDict:
        contents, expected = self.convert(model)
        self.save(contents, path)
        return expected

    def problem(self, model: nn.Module) -> str | None:
        """Why ``model`` does not fit the layout, or None."""
        try:
            self.convert(model)
        except LayoutError as e:
            return str(e)
        return None


LAYOUTS: dict[str, Layout] = {
    'timm': Layout(timm_layout, _save_safetensors),
    'openai_clip': Layout(openai_clip_layout),
    'open_clip': Layout(open_clip_layout),
    'dinov2': Layout(dinov2_layout),
    'big_vision': Layout(big_vision_layout, _save_npz),
    'microsoft': Layout(microsoft_layout),
    'classic_vit': Layout(classic_vit_layout, _save_safetensors),
}
