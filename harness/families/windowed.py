"""What the shifted-window families share (Swin v1, Swin-V2, Swin-V2-CR): windows and shifts per stage.

A Swin model is built with a window per stage (one for all stages, or one each, square or ``(h, w)``); a stage
whose feature map is smaller than its window along an axis uses the feature map there and does not shift
along it. timm chooses the windows differently per path:

* ``create_model(img_size=...)`` keeps the configured windows (Swin-V2-CR built without one divides the new
  patch grid by its ``window_ratio``), each limited by its stage's feature map at the new size;
* ``set_input_size(img_size=...)`` without a window scales each stage's window with the grid (timm 1.0.31;
  earlier releases divide the grid by 8), so the harness spells out what the model was configured with, per
  stage where the stages differ, to make the path comparable with ``create``;
* ``dynamic_img_size`` keeps the windows and shifts the model was built with and only builds the attention
  masks per input.

The configured windows come from the matrix entry's ``window_size`` when it sets one, else from timm's record
of them (``_ref_window_sizes``, timm 1.0.31 on). Older releases keep no record: a stage whose window fills its
feature map along an axis then counts as configured with the first stage's window there if that is larger
(timm's own models configure one window for every stage, except ``swin_s3_*``, whose windows fit their
feature maps at their own size).
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import math
from typing import Any

import torch
from torch import nn

from harness.build import Unsupported
from harness.families import Geometry, Size, Target, to_size
from harness.families.base import GEOMETRIC, Family
from harness.reference.window_masks import position_map, shifted_window_mask, shifted_windows
from harness.spec.matrix import window_value

MASK_IN_USE = 'attn_mask in use'   # a shifted block's forward tensor: the mask its window attention gets
WINDOWS_IN_USE = 'windows in use'  # every block's forward tensor: the windows it cuts its (rolled) map into
WINDOW_ATTENTION_STEPS = ('_attn', '_shifted_window_attn')   # a block's roll-pad-partition-attend step (v1/V2, V2-CR)


class ShiftedWindowFamily(Family):
    stages_attr = 'layers'       # the model's sequence of stages
    features_nchw = False        # forward_features is (B, C, H, W) rather than (B, H, W, C)
    window_sizes_apply = True
    stages_pad = True            # stage maps need not tile: stage_grid, shifted_window_mask pad as timm does
    attention = 'windows'
    trigger_kinds = GEOMETRIC + ('window', 'window_rect', 'window_rect_source')

    def geometry(self, model: nn.Module) -> Geometry:
        pe = model.patch_embed
        grid = to_size(pe.grid_size)
        stages = getattr(model, self.stages_attr)
        windows = tuple(to_size(stage.blocks[0].window_size) for stage in stages)
        return Geometry(
            img_size=to_size(pe.img_size), patch_size=to_size(pe.patch_size), grid_size=grid,
            embed_dim=model.feature_info[0]['num_chs'], num_features=model.num_features,
            num_classes=model.num_classes, window_sizes=windows,
            shift_sizes=tuple(to_size(stage.blocks[1].shift_size) if len(stage.blocks) > 1 else (0, 0)
                              for stage in stages),
            window_config=_recorded_windows(model, windows, grid),
            stage_channels=tuple(info['num_chs'] for info in model.feature_info),
            stage_depths=tuple(len(stage.blocks) for stage in stages),
        )

    def miniatures(self, model):
        """Every stage kept, each two blocks deep (the second is the shifted one) with two 16-wide heads; else
        the stages' own widths."""
        stages = len(self.geometry(model).stage_depths)
        return ({'embed_dim': 32, 'depths': (2,) * stages, 'num_heads': (2,) * stages},
                {'depths': (2,) * stages})

    def source_geometry(self, model: nn.Module, spec) -> Geometry:
        geometry = self.geometry(model)
        configured = spec.kwargs.get('window_size')
        if configured is None:
            return geometry
        return dataclasses.replace(geometry, window_config=stage_windows(configured, len(geometry.stage_depths)))

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        patch = to_size(target.patch_size) if target.patch_size else source.patch_size
        grid = (target.img_size[0] // patch[0], target.img_size[1] // patch[1])
        config = self._windows_at(source, target, grid)
        feats = [stage_grid(grid, i) for i in range(len(source.stage_depths))]
        windows = tuple(_clamped_window(window, feat) for window, feat in zip(config, feats))
        shifts = tuple(_shift(window, feat) if depth > 1 else (0, 0)
                       for window, feat, depth in zip(config, feats, source.stage_depths))
        return Geometry(**{**source.__dict__, 'img_size': target.img_size, 'patch_size': patch, 'grid_size': grid,
                           'window_sizes': windows, 'shift_sizes': shifts, 'window_config': config})

    def _windows_at(self, source: Geometry, target: Target, grid: Size) -> tuple[Size, ...]:
        """The configured window of each stage at the target (before each is limited by its feature map)."""
        stages = len(source.stage_depths)
        if target.window_size is not None:
            return (to_size(target.window_size),) * stages
        if source.window_ratio is not None:
            return ((max(1, grid[0] // source.window_ratio), max(1, grid[1] // source.window_ratio)),) * stages
        return source.window_config

    def computed_geometry(self, source: Geometry, target: Target, path: str) -> Geometry:
        """``dynamic_img_size`` keeps the windows and shifts the source configuration chose for its own grid
        (timm builds only the attention masks per input); the other paths choose them for the target.

        For dynamic they are what the configuration implies at the source's own size, not what the source
        model holds: a model built with a wrong window or shift at its own size (a shift kept where its window
        covers the stage) is then judged wrong on the path that runs it as built."""
        expected = self.expected_geometry(source, target)
        if path != 'dynamic':
            return expected
        own = self.expected_geometry(source, Target(img_size=source.img_size))
        return dataclasses.replace(expected, window_sizes=own.window_sizes, shift_sizes=own.shift_sizes,
                                   window_config=own.window_config)

    def dynamic_reference(self, native, spec, source, computed, weights):
        """The source model itself (its windows, shifts and position biases) fed the target size through timm's
        static path, each shifted block given the harness's own attention mask for its stage's grid at the
        target (:func:`masked_source_model`)."""
        return masked_source_model(native, self.stages_attr, computed.grid_size, computed.window_sizes,
                                   computed.shift_sizes)

    def forward_tensors(self, model, computed):
        """The attention masks and windows each block uses for an input of ``computed``
        (:func:`window_forward_tensors`)."""
        return window_forward_tensors(model, self.stages_attr, computed.grid_size)

    def expected_forward_tensors(self, weights, spec, source, computed):
        """The harness's shifted-window mask for each shifted block's stage grid, window and shift, and the
        windows every block must form (:func:`expected_window_tensors`)."""
        return expected_window_tensors(self.stages_attr, computed.grid_size, computed.window_sizes,
                                       computed.shift_sizes, computed.stage_depths)

    def expected_shapes(self, geometry: Geometry, batch: int) -> dict[str, Any]:
        stages = range(len(geometry.stage_depths))
        last = stage_grid(geometry.grid_size, stages[-1])
        features = (batch, geometry.num_features, *last) if self.features_nchw else \
            (batch, *last, geometry.num_features)
        return {
            'forward_features': features,
            'logits': (batch, geometry.num_classes or geometry.num_features),
            'forward_intermediates': [
                (batch, geometry.stage_channels[i], *stage_grid(geometry.grid_size, i)) for i in stages],
        }

    def set_input_size_kwargs(self, target: Target, source: Geometry) -> dict[str, Any]:
        """Without a window, set_input_size scales the windows with the grid where create keeps the model's
        own: ask for what the model was configured with (its ratio, one window, or one per stage), so that
        both paths are asked for the same."""
        kwargs = self.create_kwargs(target)
        if 'window_size' in kwargs:
            return kwargs
        if source.window_ratio is not None:
            return {**kwargs, 'window_ratio': source.window_ratio}
        if len(set(source.window_config)) == 1:
            return {**kwargs, 'window_size': window_value(source.window_config[0])}
        if not _set_input_size_takes_stage_windows():
            raise Unsupported('set_input_size in this timm release takes one window for every stage; the model is '
                              f'configured with one per stage ({_listing(source.window_config)})')
        return {**kwargs, 'window_size': [list(window) for window in source.window_config]}

    def only_img_size_changes(self, target: Target, source: Geometry) -> bool:
        window_same = target.window_size is None or all(
            window == to_size(target.window_size) for window in source.window_config)
        return super().only_img_size_changes(target, source) and window_same

    def total_downsample(self, geometry: Geometry) -> int:
        return 2 ** (len(geometry.stage_depths) - 1)


def masked_source_model(native: nn.Module, stages_attr: str, grid: Size, windows: tuple[Size, ...],
                        shifts: tuple[Size, ...]) -> nn.Module:
    """A copy of ``native`` fed a ``grid`` of patches through timm's static path, each block of stage ``i`` given
    the harness's own attention mask for that stage's map with ``windows[i]`` and (odd blocks) ``shifts[i]``."""
    model = copy.deepcopy(native)
    model.patch_embed.strict_img_size = False
    for i, stage in enumerate(getattr(model, stages_attr)):
        stage_map = stage_grid(grid, i)
        for j, block in enumerate(stage.blocks):
            shift = shifts[i] if j % 2 else (0, 0)
            block.dynamic_mask = False
            block.attn_mask = shifted_window_mask(stage_map, windows[i], shift)
    return model.eval()


@torch.no_grad()
def window_forward_tensors(model: nn.Module, stages_attr: str, grid: Size) -> dict[str, torch.Tensor]:
    """The attention mask each shifted block uses at forward time for a ``grid`` input: built by the block's own
    ``get_attn_mask`` for its stage's map padded to whole windows where the block builds masks per input
    (``dynamic_mask``, as ``_attn`` calls it), else the mask it holds; and the windows every block forms
    (:func:`windows_in_use`)."""
    masks = {}
    for i, stage in enumerate(getattr(model, stages_attr)):
        stage_map = stage_grid(grid, i)
        for j, block in enumerate(stage.blocks):
            if not any(to_size(block.shift_size)):
                continue
            window = to_size(block.window_size)
            padded = [math.ceil(f / w) * w for f, w in zip(stage_map, window)]
            dynamic = getattr(block, 'dynamic_mask', False)
            mask = block.get_attn_mask(torch.zeros(1, *padded, 1)) if dynamic else block.attn_mask
            masks[f'{stages_attr}.{i}.blocks.{j}.{MASK_IN_USE}'] = mask
    return {**masks, **windows_in_use(model, stages_attr, grid)}


@torch.no_grad()
def windows_in_use(model: nn.Module, stages_attr: str, grid: Size) -> dict[str, torch.Tensor]:
    """The windows each block cuts its stage's map into for a ``grid`` input, as its own window-attention step
    rolls, pads and partitions a map of position numbers (:func:`position_map`), its attention swapped for a
    recorder: the cyclic shift is timm's block code, which every reference model runs too."""
    windows = {}
    for i, stage in enumerate(getattr(model, stages_attr)):
        stage_map = stage_grid(grid, i)
        for j, block in enumerate(stage.blocks):
            step = next((getattr(block, name) for name in WINDOW_ATTENTION_STEPS if hasattr(block, name)), None)
            if step is not None:
                windows[f'{stages_attr}.{i}.blocks.{j}.{WINDOWS_IN_USE}'] = _windows_formed(block, step, stage_map)
    return windows


def expected_window_tensors(stages_attr: str, grid: Size, windows: tuple[Size, ...], shifts: tuple[Size, ...],
                            depths: tuple[int, ...]) -> dict[str, torch.Tensor]:
    """What :func:`window_forward_tensors` must give: the harness's shifted-window mask for each shifted block's
    stage map, window and shift, and the windows every block must form (:func:`shifted_windows`)."""
    tensors = {}
    for i, depth in enumerate(depths):
        stage_map = stage_grid(grid, i)
        for j in range(depth):
            prefix = f'{stages_attr}.{i}.blocks.{j}'
            tensors[f'{prefix}.{WINDOWS_IN_USE}'] = shifted_windows(stage_map, windows[i], shifts[i] if j % 2
                                                                    else (0, 0))
            mask = shifted_window_mask(stage_map, windows[i], shifts[i]) if j % 2 else None
            if mask is not None:
                tensors[f'{prefix}.{MASK_IN_USE}'] = mask
    return tensors


def stage_windows(value: Any, stages: int) -> tuple[Size, ...]:
    """A ``window_size`` argument as one ``(h, w)`` per stage, read as timm's constructors read it: an int or
    an ``(h, w)`` pair of ints is every stage's window, any other sequence has one entry (int or pair) per
    stage."""
    if isinstance(value, int):
        return (to_size(value),) * stages
    if len(value) == 2 and all(isinstance(v, int) for v in value):
        return (to_size(value),) * stages
    return tuple(to_size(v) for v in value)


def _recorded_windows(model: nn.Module, windows: tuple[Size, ...], grid: Size) -> tuple[Size, ...]:
    """The windows the model was configured with, as far as the model says (see the module docstring)."""
    recorded = getattr(model, '_ref_window_sizes', None)
    if recorded is not None:
        return tuple(to_size(window) for window in recorded)
    first = windows[0]
    return tuple(tuple(w if w < f else max(w, w0) for w, f, w0 in zip(window, stage_grid(grid, i), first))
                 for i, window in enumerate(windows))


@functools.lru_cache(maxsize=None)
def _set_input_size_takes_stage_windows() -> bool:
    """timm 1.0.31 added per-stage windows to set_input_size, resolved by ``resolve_window_args``."""
    return hasattr(importlib.import_module('timm.models.swin_transformer'), 'resolve_window_args')


def _listing(windows: tuple[Size, ...]) -> str:
    return ', '.join(f'{h}x{w}' for h, w in windows)


class _WindowRecorder(nn.Module):
    """Stands in for a block's window attention: keeps the windows it is given and returns them unchanged."""

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.windows = windows
        return windows


def _windows_formed(block: nn.Module, step, grid: Size) -> torch.Tensor:
    """``(num_windows, area)``: the position numbers in each window ``step`` (the block's own window-attention
    step) gives its attention for a ``grid`` map."""
    attention, recorder = block.attn, _WindowRecorder()
    block.attn = recorder
    try:
        step(position_map(grid).to(next(block.parameters()).device))
    finally:
        block.attn = attention
    return recorder.windows[..., 0].cpu()


def stage_grid(grid: Size, stage: int) -> Size:
    """The feature map of ``stage`` for a ``grid`` of patches: each patch merging pads an odd side by one
    (``(H + 1) // 2``), so a grid that does not halve evenly (64x72 at patch 4: 16x18, 8x9, 4x5) keeps its
    last row and column of cells."""
    return -(-grid[0] // 2 ** stage), -(-grid[1] // 2 ** stage)


def _shift(window: Size, feat: Size) -> Size:
    """Shifted blocks shift by half a window, along an axis the window does not already cover whole."""
    return tuple(w // 2 if f > w else 0 for w, f in zip(window, feat))


def _clamped_window(window: Size, feat: Size) -> Size:
    """A stage whose feature map is smaller than the window uses the feature map as its window."""
    return min(window[0], feat[0]), min(window[1], feat[1])
