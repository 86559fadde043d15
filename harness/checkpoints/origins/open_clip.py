"""Origin ``open_clip``: an OpenCLIP training checkpoint (``epoch_latest.pt``) of the OpenAI-style model."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.checkpoints.origins import StateDict, register_origin
from harness.checkpoints.origins.mapping import save_pickle
from harness.checkpoints.origins.openai_clip import clip_state, clip_visual


def write_open_clip(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """An OpenCLIP training checkpoint: the DDP-wrapped model (``module.`` prefix) under ``state_dict``."""
    visual, reference = clip_visual(model)
    torch.save({'epoch': 32, 'state_dict': {f'module.{k}': v for k, v in visual.items()}}, path)
    return reference


@register_origin('open_clip', 'OpenCLIP training checkpoint, `module.visual.*` keys under `state_dict`',
                 rank=2, families=('vit',), filename='epoch_latest.pt', save=save_pickle, repro_writer=write_open_clip)
def open_clip_layout(model: nn.Module) -> tuple[dict, StateDict]:
    """An OpenCLIP training checkpoint (``epoch_latest.pt``) of the OpenAI-style model.

    OpenCLIP's ``VisionTransformer`` uses OpenAI's key names; the training script saves the DDP-wrapped
    model (``module.`` prefix) under ``state_dict`` beside ``epoch``, ``name`` and the optimizer state.
    """
    state, expected = clip_state(model)
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
