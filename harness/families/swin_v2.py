"""Swin Transformer V2 (``SwinTransformerV2``): continuous position bias, nothing stored to resample.

Each window attention recomputes its log-spaced relative coordinates for its window (normalised by the
pretrained window where the model names one, ``pretrained_window_sizes``, else by the window itself) and
feeds them through the checkpoint's CPB MLP. Fidelity compares each block's coordinate table and the bias it
yields (:meth:`forward_tensors`, on every path) with the harness's own (:mod:`harness.reference.cpb`), from the
window the block has at the target and the checkpoint's MLP weights. The state dict itself changes only with the patch
size (the base family's kernel resample).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.families import Geometry, Size, register_family, to_size
from harness.families.base import meta_model
from harness.families.windowed import ShiftedWindowFamily
from harness.reference.cpb import log_spaced_table, v2_position_bias


@register_family
class SwinV2Family(ShiftedWindowFamily):
    name = 'swin_v2'
    model_classes = ('timm.models.swin_transformer_v2.SwinTransformerV2',)

    def forward_tensors(self, model: nn.Module, computed: Geometry) -> dict[str, torch.Tensor]:
        """The shifted-window family's, and each block's position bias (:func:`cpb_tensors`)."""
        return {**super().forward_tensors(model, computed), **cpb_tensors(model)}

    def expected_forward_tensors(self, weights, spec, source: Geometry, computed: Geometry):
        return {**super().expected_forward_tensors(weights, spec, source, computed),
                **expected_cpb_tensors(weights, computed.window_sizes, computed.stage_depths,
                                       pretrained_windows(spec))}


def expected_cpb_tensors(weights: dict[str, torch.Tensor], windows: tuple[Size, ...], depths: tuple[int, ...],
                         pretrained: list[Size]) -> dict[str, torch.Tensor]:
    """What :func:`cpb_tensors` must give: per block of stage ``i``, the harness's coordinate table for
    ``windows[i]`` (normalised by ``pretrained[i]`` where it is not (0, 0)) and the bias the checkpoint's MLP in
    ``weights`` gives it."""
    out = {}
    for i, (depth, window) in enumerate(zip(depths, windows)):
        table = log_spaced_table(window, pretrained[i])
        for j in range(depth):
            prefix = f'layers.{i}.blocks.{j}.attn'
            out[f'{prefix}.relative_coords_table'] = table
            out[f'{prefix}.position_bias'] = v2_position_bias(
                table, window, weights[f'{prefix}.cpb_mlp.0.weight'], weights[f'{prefix}.cpb_mlp.0.bias'],
                weights[f'{prefix}.cpb_mlp.2.weight'])
    return out


@torch.no_grad()
def cpb_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per block, the coordinate table and the bias it adds to its attention logits, as every forward computes
    them (``16 sigmoid(cpb_mlp(table))`` looked up by the block's relative position index): recomputed per
    forward, so compared on every path, dynamic included."""
    out = {}
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            attn, prefix = block.attn, f'layers.{i}.blocks.{j}.attn'
            area = attn.window_size[0] * attn.window_size[1]
            per_offset = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
            per_pair = per_offset[attn.relative_position_index.view(-1)].view(area, area, -1)
            out[f'{prefix}.relative_coords_table'] = attn.relative_coords_table
            out[f'{prefix}.position_bias'] = 16 * torch.sigmoid(per_pair.permute(2, 0, 1))
    return out


def pretrained_windows(spec) -> list[Size]:
    """Each stage's ``pretrained_window_sizes`` entry ((0, 0): none), as the model was configured."""
    return [to_size(stage.blocks[0].attn.pretrained_window_size) for stage in meta_model(spec).layers]
