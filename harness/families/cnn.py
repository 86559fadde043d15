"""Models with nothing to resample: their input size flows only through convolutions and pooling.

Most CNNs (ResNet, ConvNeXt, EfficientNet, RegNet, ...) accept a new input size as they are. Nothing is
resampled, so there is no fidelity oracle and only ``create`` applies (timm has no ``set_input_size`` or
``dynamic_img_size`` for them); the cases check load, the shape of every output, finiteness, drift and
timing at the new size. The oracle for shapes is the model's own ``feature_info``: each level's channels and
reduction (its stride from input pixels) say what size its feature map must have at any input size.

Membership is proven, not assumed: a forward pass on the meta device at a larger, non-square size (a multiple
of 64, so every stride divides it) must work, and its features and intermediates there must follow
``feature_info`` (NCHW, each side the input side over the level's reduction). A model timm itself resizes
(``set_input_size``) has something to resample and is left to a family with an oracle.

Not every such model's ``forward_features`` is NCHW: timm marks the NHWC ones (MambaOut, Sequencer) with
``output_fmt``, and a few give tokens, with no attribute saying so: XCiT (Fourier position features computed for
each input, a class token) and Twins (conditional position convolutions), named in :data:`TOKEN_OUTPUTS`.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.families import Geometry, Size, Target, register_family, to_size
from harness.families.base import Family

# classes whose forward_features are tokens (B, prefix + h * w, C) on the last feature map's grid
TOKEN_OUTPUTS = ('Xcit', 'Twins')


def feature_layout(model: nn.Module) -> str:
    if type(model).__name__ in TOKEN_OUTPUTS:
        return 'NLC'
    return 'NHWC' if str(getattr(model, 'output_fmt', 'NCHW')).upper() == 'NHWC' else 'NCHW'


@register_family
class CnnFamily(Family):
    name = 'cnn'
    attention = 'none'
    trigger_kinds = ('rectangular',)   # nothing resampled: one new size, every feature map's shape changes
    category = 'nothing_to_resample'
    rank = 10
    origins = ('timm', 'hub', 'file')
    paths = ('create',)
    checks = ('load', 'reload', 'dtype', 'trainable', 'shapes', 'features', 'finite', 'drift')
    patch_sizes_apply = False
    fixed_patch = 'a CNN has no patch embedding: its stride is fixed'
    stores_geometry = False

    def claim(self, probe):
        if probe.problem:
            return probe.problem
        if probe.timm_resizes or not probe.takes_other_sizes:
            return ''
        if not getattr(probe.model, 'feature_info', None):
            return 'it takes other sizes but has no feature_info to say what its outputs must be'
        at = self.expected_geometry(self.geometry(probe.model), Target(probe.probe_size))
        expected = self.expected_shapes(at, 1)
        size = f'{probe.probe_size[0]}x{probe.probe_size[1]}'
        if probe.probe_features != expected['forward_features']:
            return (f'forward_features gives {probe.probe_features} at {size}; feature_info implies '
                    f'{expected["forward_features"]}')
        got = _intermediate_shapes(probe.model, probe.probe_size)
        if got is not None and got != expected['forward_intermediates']:
            return f'forward_intermediates gives {got} at {size}; feature_info implies ' \
                   f'{expected["forward_intermediates"]}'
        return None

    def geometry(self, model: nn.Module) -> Geometry:
        """The model's own size (its pretrained config) and what feature_info says about its feature maps."""
        info = model.feature_info
        size = to_size(tuple((model.pretrained_cfg or {}).get('input_size', (3, 224, 224))[1:]))
        stride = info[-1]['reduction']
        return Geometry(img_size=size, patch_size=(stride, stride), grid_size=(size[0] // stride, size[1] // stride),
                        embed_dim=info[0]['num_chs'], num_features=model.num_features, num_classes=model.num_classes,
                        num_prefix_tokens=getattr(model, 'num_prefix_tokens', 0) or 0,
                        stage_channels=tuple(level['num_chs'] for level in info),
                        stage_reductions=tuple(level['reduction'] for level in info),
                        feature_layout=feature_layout(model))

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        stride = source.patch_size
        return Geometry(**{**source.__dict__, 'img_size': target.img_size,
                           'grid_size': (target.img_size[0] // stride[0], target.img_size[1] // stride[1])})

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        height, width = geometry.img_size
        grid, channels = geometry.grid_size, geometry.num_features
        features = {'NCHW': (batch, channels, *grid), 'NHWC': (batch, *grid, channels),
                    'NLC': (batch, geometry.num_prefix_tokens + grid[0] * grid[1], channels)}
        return {
            'forward_features': features[geometry.feature_layout],
            'logits': (batch, geometry.num_classes or geometry.num_features),
            'forward_intermediates': [(batch, channels, height // reduction, width // reduction)
                                      for channels, reduction in zip(geometry.stage_channels,
                                                                     geometry.stage_reductions)],
        }

    def create_kwargs(self, target: Target) -> dict[str, Any]:
        return {}   # the model as it is; only its input changes

    def size_problem(self, model, size: Size, patch_size: int | None) -> str | None:
        from harness.families.base import native_geometry
        stride = native_geometry(self, model).patch_size[0]
        if size[0] % stride or size[1] % stride:
            return (f'{size[0]}x{size[1]}: each side must be a multiple of {stride}, the stride of its last '
                    f'feature map')
        return None


def _intermediate_shapes(model: nn.Module, size: Size) -> list[tuple[int, ...]] | None:
    """forward_intermediates' per-level shapes for one image on the model's device (None: it has none)."""
    if not hasattr(model, 'forward_intermediates'):
        return None
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        with torch.no_grad():
            _, levels = model.forward_intermediates(torch.zeros(1, 3, *size, device=device))
    except Exception as e:   # noqa: BLE001 - reported as the reason it is not claimed
        return [(f'{type(e).__name__}',)]
    return [tuple(level.shape) for level in levels]
