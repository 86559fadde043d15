"""Swin Transformer V2-CR (``SwinTransformerV2Cr``, Christoph Reich's reimplementation in timm).

Like Swin-V2, a continuous position bias: each window attention recomputes its coordinates for its window,
here one per token pair and not normalised (``sign(d) ln(1 + |d|)``), and feeds them through the checkpoint's
meta MLP; fidelity compares both with the harness's own on every path (:mod:`harness.reference.cpb`). It differs
from the other Swin families where timm's model does: built without a window it takes the patch grid divided by
``window_ratio`` (8), at the size it is built for, so ``create_model(img_size=...)`` re-chooses the windows;
``forward_features`` is NCHW; its patch embedding has no other patch size.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from harness.families import Geometry, Size, register_family
from harness.families.windowed import ShiftedWindowFamily
from harness.reference.cpb import cr_position_bias, log_pair_coords

DEFAULT_WINDOW_RATIO = 8   # SwinTransformerV2Cr's default window_ratio


@register_family
class SwinV2CrFamily(ShiftedWindowFamily):
    name = 'swin_v2_cr'
    model_classes = ('timm.models.swin_transformer_v2_cr.SwinTransformerV2Cr',)
    stages_attr = 'stages'
    features_nchw = True
    patch_sizes_apply = False
    fixed_patch = 'its patch embedding takes no other patch size'

    def source_geometry(self, model: nn.Module, spec) -> Geometry:
        """A model built without a window (every registered one) chooses its windows by ratio: recorded as
        ``window_ratio`` when its windows are what the ratio gives (a single ratio for every stage)."""
        geometry = super().source_geometry(model, spec)
        ratio = spec.kwargs.get('window_ratio', DEFAULT_WINDOW_RATIO)
        if spec.kwargs.get('window_size') is not None or not isinstance(ratio, int):
            return geometry
        by_ratio = tuple(max(1, g // ratio) for g in geometry.grid_size)
        if any(window != by_ratio for window in geometry.window_config):
            return geometry
        return dataclasses.replace(geometry, window_ratio=ratio)

    @torch.no_grad()
    def forward_tensors(self, model: nn.Module, computed: Geometry) -> dict[str, torch.Tensor]:
        """The shifted-window family's, and per block its pair coordinates and the bias its forward adds to the
        attention logits (recomputed per forward: compared on every path, dynamic included)."""
        return {**super().forward_tensors(model, computed), **cr_cpb_tensors(model)}

    def expected_forward_tensors(self, weights, spec, source: Geometry, computed: Geometry):
        return {**super().expected_forward_tensors(weights, spec, source, computed),
                **expected_cr_cpb_tensors(weights, computed.window_sizes, computed.stage_depths)}


@torch.no_grad()
def cr_cpb_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per block, its pair coordinates and the bias its forward adds to the attention logits."""
    out = {}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f'stages.{i}.blocks.{j}.attn'
            out[f'{prefix}.relative_coordinates_log'] = block.attn.relative_coordinates_log
            out[f'{prefix}.position_bias'] = block.attn._relative_positional_encodings()[0]
    return out


def expected_cr_cpb_tensors(weights: dict[str, torch.Tensor], windows: tuple[Size, ...],
                            depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """What :func:`cr_cpb_tensors` must give: per block of stage ``i``, the harness's pair coordinates for
    ``windows[i]`` and the bias the checkpoint's meta MLP in ``weights`` gives them."""
    out = {}
    for i, (depth, window) in enumerate(zip(depths, windows)):
        coords = log_pair_coords(window)
        for j in range(depth):
            prefix = f'stages.{i}.blocks.{j}.attn'
            mlp = f'{prefix}.meta_mlp'
            out[f'{prefix}.relative_coordinates_log'] = coords
            out[f'{prefix}.position_bias'] = cr_position_bias(
                coords, window, weights[f'{mlp}.fc1.weight'], weights[f'{mlp}.fc1.bias'],
                weights[f'{mlp}.fc2.weight'], weights[f'{mlp}.fc2.bias'])
    return out
