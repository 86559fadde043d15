"""What the origins' layout writers share: key mapping rules, the ViT checks, the savers.

Each origin module (:mod:`harness.checkpoints.origins`) saves a timm model's weights exactly as the origin's real
releases store them.

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

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors.torch import save_file
from timm.layers import GluMlp, Mlp
from timm.models.vision_transformer import Block, VisionTransformer
from torch import Tensor, nn

from harness.checkpoints.origins import LayoutError, StateDict

# --- mapping a timm state dict to a layout's keys ---------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A timm key fully matching ``pattern`` becomes what ``convert(match, tensor)`` returns (one key or more,
    or none when the layout cannot hold the tensor and timm recreates it)."""
    pattern: re.Pattern
    convert: Callable[[re.Match, Tensor], StateDict]


def key_rule(pattern: str, target: str | Callable[[re.Match], str] = r'\g<0>',
             transform: Callable[[Tensor], Tensor] = lambda v: v) -> Rule:
    """A one-to-one rule; ``target`` is a ``re`` template over the match (or a function of it)."""
    name = target if callable(target) else (lambda m: m.expand(target))
    return Rule(re.compile(pattern), lambda m, v: {name(m): transform(v)})


def drop_rule(pattern: str) -> Rule:
    """A rule for a tensor the layout has no place for and timm recreates on load (the writer says how)."""
    return Rule(re.compile(pattern), lambda m, v: {})


_BLOCK_INDEX = re.compile(r'(?<=blocks\.)\d+|(?<=block_)\d+')


def _listing(keys: Iterable[str]) -> str:
    """Keys for an error message, each kind once (block indices collapsed to N)."""
    return ', '.join(dict.fromkeys(_BLOCK_INDEX.sub('N', k) for k in keys))


def convert_keys(state: StateDict, rules: list[Rule], full_keys: Iterable[str] | None = None) -> StateDict:
    """``state`` in the layout's names: each key through the first rule matching it.

    Raises LayoutError for keys no rule takes and, when ``full_keys`` (the layout's full key set) is
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
    missing = [k for k in full_keys or () if k not in out]
    problems = []
    if homeless:
        problems.append(f'the layout has no place for {_listing(homeless)}')
    if missing:
        problems.append(f'every file of the layout holds {_listing(missing)}, which the model lacks')
    if problems:
        raise LayoutError('; '.join(problems))
    return {k: v.clone(memory_format=torch.contiguous_format) for k, v in out.items()}


def layout_keys(top: Iterable[str], block_prefix: str, block_keys: Iterable[str], depth: int) -> list[str]:
    """A layout's full key set: ``top`` plus ``block_keys`` under ``block_prefix.format(i)`` for each block."""
    block_keys = tuple(block_keys)
    return [*top, *(block_prefix.format(i) + k for i in range(depth) for k in block_keys)]


def timm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as independent contiguous tensors (later changes to the model don't leak in).

    Repro scripts carry it: it is annotated with what a script can import.
    """
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}


def filler(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Weight-sized values for tensors a release carries but timm never reads."""
    return torch.randn(shape, generator=generator) * 0.02


def is_swiglu(mlp: nn.Module) -> bool:
    """timm's ``SwiGLUPacked``: one ``fc1`` producing value and gate halves, SiLU on the first half (as DINOv2)."""
    return isinstance(mlp, GluMlp) and isinstance(mlp.act, nn.SiLU) and not mlp.gate_last


def require_vit(model: nn.Module, swiglu_ok: bool = False) -> None:
    """The ViT layouts hold pre-norm transformer blocks with a plain two-layer MLP (DINOv2 also packed SwiGLU)."""
    if not isinstance(model, VisionTransformer):
        raise LayoutError(f'the layout holds a VisionTransformer, not a {type(model).__name__}')
    for block in model.blocks:
        if not isinstance(block, Block):
            raise LayoutError(f'the layout holds pre-norm transformer blocks, not {type(block).__name__}')
        if not (isinstance(block.mlp, Mlp) or swiglu_ok and is_swiglu(block.mlp)):
            raise LayoutError(f"the layout's MLP cannot hold timm's {type(block.mlp).__name__}")


def require_class_position(model: nn.Module) -> None:
    """CLIP and Google's releases embed the class token's position in front of the grid's."""
    if getattr(model, 'no_embed_class', False):
        raise LayoutError("the layout's position embedding covers the class token; the model's does not")


# --- saving ------------------------------------------------------------------------------------------------

def save_safetensors(state: StateDict, path: Path) -> None:
    """timm picks its safetensors reader by the ``.safetensors`` suffix, so the path must have it."""
    if Path(path).suffix != '.safetensors':
        raise ValueError(f'timm only reads safetensors from a .safetensors path, not {path}')
    save_file(state, str(path))


def save_npz(state: StateDict, path: Path) -> None:
    with open(path, 'wb') as f:
        np.savez(f, **{k: v.numpy() for k, v in state.items()})


def save_pickle(contents: Any, path: Path) -> None:
    """``torch.save`` through a Python file: a write refused (a full disk) then raises with its ``OSError`` as
    the context, which :func:`harness.faults.is_disk_full` finds (torch's own writer says 'unexpected pos')."""
    with open(path, 'wb') as f:
        torch.save(contents, f)
