"""Origin ``microsoft``: the original Swin repository's releases (Swin and Swin-V2), converted by timm's Swin
``checkpoint_filter_fn``."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from torch import nn

from harness.checkpoints.origins import LayoutError, StateDict, register_origin
from harness.checkpoints.origins.mapping import convert_keys, key_rule, save_pickle, timm_state


def write_microsoft(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The original Swin repository's release: ``{'model': ...}``, each patch merge at the end of the stage
    before timm's (its ``layers.i.downsample`` feeds stage i + 1), the classifier a bare ``head``."""
    reference = timm_state(model)
    saved = {re.sub(r'layers\.(\d+)\.downsample', lambda m: f'layers.{int(m[1]) - 1}.downsample', k)
             .replace('head.fc.', 'head.'): v for k, v in reference.items()}
    torch.save({'model': saved}, path)
    return reference


_MICROSOFT_RULES = [
    key_rule(r'layers\.(\d+)\.downsample\.(norm\.weight|norm\.bias|reduction\.weight)',
          lambda m: f'layers.{int(m[1]) - 1}.downsample.{m[2]}'),
    key_rule(r'head\.fc\.(weight|bias)', r'head.\1'),
    key_rule(r'patch_embed\.(proj|norm)\.(weight|bias)|norm\.(weight|bias)'),
    key_rule(r'layers\.\d+\.blocks\.\d+\.((norm[12]|attn\.qkv|attn\.proj|mlp\.fc[12])\.(weight|bias)'
          r'|attn\.relative_position_bias_table'                                     # v1
          r'|attn\.(logit_scale|q_bias|v_bias|cpb_mlp\.[02]\.(weight|bias)))'),      # V2
]
# buffers the repository registers as persistent (so its releases carry them) and timm recomputes
_MICROSOFT_BUFFERS = ('attn.relative_position_index', 'attn.relative_coords_table', 'attn_mask')


@register_origin('microsoft', 'original Swin repository checkpoint (`model` dict, end-of-stage downsample)',
                 rank=5, families=('swin', 'swin_v2'), filename='swin_original.pth', save=save_pickle,
                 repro_writer=write_microsoft)
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
    expected = timm_state(model)
    saved = convert_keys(expected, _MICROSOFT_RULES)
    saved.update({k: v.clone() for k, v in model.named_buffers() if k.endswith(_MICROSOFT_BUFFERS)})
    return {'model': saved}, expected
