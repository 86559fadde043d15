"""Checkpoint origins: the file layouts the harness can load a model from.

Synthesized origins are written by :mod:`harness.checkpoints` from a seeded model; ``hub`` loads timm's
real pretrained tag and ``file`` a user's checkpoint. All of them go through timm's own loading code.
"""
from __future__ import annotations

from dataclasses import dataclass

HUB_ORIGIN = 'hub'
FILE_ORIGIN = 'file'


@dataclass(frozen=True)
class Origin:
    name: str
    description: str
    filename: str | None = None     # file name of a synthesized checkpoint; None: not synthesized
    custom_load: bool = False       # timm loads it with the model's own `load_pretrained` (.npz releases)
    # how timm's loader for this layout resamples embeddings at create time (the .npz loader differs)
    interpolation: str = 'bicubic'
    antialias: bool = True

    @property
    def synthesized(self) -> bool:
        return self.filename is not None


ORIGINS: dict[str, Origin] = {o.name: o for o in (
    Origin('timm', "timm's own state dict (safetensors)", 'model.safetensors'),
    Origin('openai_clip', 'OpenAI CLIP layout, `visual.*` keys beside a text tower',
           'open_clip_pytorch_model.bin'),
    Origin('open_clip', 'OpenCLIP training checkpoint, `module.visual.*` keys under `state_dict`',
           'epoch_latest.pt'),
    Origin('dinov2', 'DINOv2 hub layout with `mask_token` (and `register_tokens` for reg models)',
           'dinov2_pretrain.pth'),
    Origin('big_vision', "Google's JAX ViT release (.npz, `Transformer/encoderblock_N/...`)",
           'big_vision.npz', custom_load=True, interpolation='bilinear', antialias=False),
    Origin('microsoft', 'original Swin repository checkpoint (`model` dict, end-of-stage downsample)',
           'swin_original.pth'),
    Origin('classic_vit', "a classic timm ViT's state dict (flat pos_embed, conv patch kernel) for a NaFlexVit",
           'model.safetensors'),
    Origin(HUB_ORIGIN, "timm's default pretrained tag, downloaded from the hub"),
    Origin(FILE_ORIGIN, "a user's checkpoint file, loaded like a hub file"),
)}
