"""What BEiT, the relative-position ViTs and MaxxViT share: attention biased by relative-position modules.

Each module covers a window of its own (the token grid, a MaxViT window or grid partition, a CoAtNet stage's
feature map) and holds either a learned table over the window's offsets or, as Swin V2, an MLP of log-spaced
offsets. At a new window timm resamples a table (:mod:`harness.reference.rel_pos_table`) and recomputes the
bias from the MLP; both end up as the attention bias, so fidelity compares every module's bias at the new
window with the harness's own (:mod:`harness.reference.rel_pos_bias`), beside the resampled tables. That also
covers what the state dict does not hold: the index that spreads a table over the window's token pairs, the
log-spaced coordinates, the TensorFlow lookups.

A family joins by mixing in :class:`RelPosModules` and saying where each module's window comes from
(:meth:`RelPosModules.rel_pos_window`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from harness.families import Geometry, Size, Target, to_size
from harness.families.base import Family, meta_model, timm_class
from harness.reference.rel_pos_bias import flat_table_bias, mlp_bias, per_head_table_bias
from harness.reference.rel_pos_table import resample_rel_pos_grid, resample_rel_pos_table

TABLE = 'relative_position_bias_table'
BIAS = 'attention_bias'   # what a module's derived tensor is called: '<module>.attention_bias'


@dataclass(frozen=True)
class RelPosModule:
    """One relative-position module of a model: what it holds, for which window."""
    name: str                    # its path in the model: 'blocks.0.attn', 'stages.1.blocks.0.attn_grid.attn.rel_pos'
    kind: str                    # 'table' ((2h-1)(2w-1) + 3 * prefix rows), 'per_head_table' (heads, 2h-1, 2w-1),
                                 # 'mlp'
    window: Size
    prefix_tokens: int = 0       # a class token in the window (BEiT; relpos ViTs with a class token)
    mode: str = ''               # mlp: 'cr' (timm's log coordinates) or 'swin' (Swin V2's)
    pretrained_window: Size = (0, 0)   # mlp, swin mode: the window its coordinates are normalised by (0: its own)


def rel_pos_modules(model: nn.Module) -> list[RelPosModule]:
    """Every relative-position module of ``model``, in module order."""
    mlp_class = timm_class('timm.layers.RelPosMlp')
    found = []
    for name, module in model.named_modules():
        table = getattr(module, TABLE, None)
        if mlp_class is not None and isinstance(module, mlp_class):
            mode = getattr(module, 'mode', None) or ('swin' if isinstance(module.bias_act, nn.Sigmoid) else 'cr')
            found.append(RelPosModule(name, 'mlp', to_size(module.window_size), module.prefix_tokens, mode,
                                      to_size(getattr(module, 'pretrained_window_size', (0, 0)))))
        elif isinstance(table, torch.Tensor) and getattr(module, 'window_size', None) is not None:
            window = to_size(module.window_size)
            if table.ndim == 3:
                found.append(RelPosModule(name, 'per_head_table', window))
            else:
                extra = table.shape[0] - (2 * window[0] - 1) * (2 * window[1] - 1)
                found.append(RelPosModule(name, 'table', window, prefix_tokens=extra // 3))
    return found


def resample_tables(state_dict: dict[str, torch.Tensor], source: Geometry,
                    target: Geometry) -> dict[str, torch.Tensor]:
    """The state dict's relative position tables resampled from each module's source window to its target one."""
    new_windows = dict(target.rel_pos_windows)
    return resample_window_tables(state_dict, {name: (old, new_windows[name]) for name, old in source.rel_pos_windows})


def resample_window_tables(state_dict: dict[str, torch.Tensor],
                           windows: dict[str, tuple[Size, Size]]) -> dict[str, torch.Tensor]:
    """The relative position tables of ``state_dict`` resampled, each module's from its old window to its new one
    (``windows``: module name to (old, new)); a table whose window does not change is left out."""
    out = {}
    for key, table in state_dict.items():
        if not key.endswith('.' + TABLE):
            continue
        old, new = windows[key[:-len(TABLE) - 1]]
        if old == new:
            continue
        if table.ndim == 3:
            out[key] = resample_rel_pos_grid(table, old, new)
        else:
            out[key] = resample_rel_pos_table(table, old, new, table.shape[0] - (2 * old[0] - 1) * (2 * old[1] - 1))
    return out


@torch.no_grad()
def attention_biases(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bias each relative-position module of ``model`` adds to attention, ``(heads, N, N)``, as timm computes
    it: ``get_bias()``, BEiT's ``_get_rel_pos_bias()``, or BEiT's shared ``RelativePositionBias()``."""
    biases = {}
    for found in rel_pos_modules(model):
        module = model.get_submodule(found.name)
        compute = getattr(module, 'get_bias', None) or getattr(module, '_get_rel_pos_bias', None) or module
        bias = compute()
        biases[f'{found.name}.{BIAS}'] = bias.reshape(-1, *bias.shape[-2:]).float().cpu()
    return biases


def expected_attention_biases(weights: dict[str, torch.Tensor], modules: list[RelPosModule],
                              windows: dict[str, Size]) -> dict[str, torch.Tensor]:
    """The bias each module must add at its window in ``windows``, from ``weights`` (tables already at that
    window), by the harness's own definitions."""
    biases = {}
    for module in modules:
        window = windows[module.name]
        if module.kind == 'mlp':
            layers = [(weights[f'{module.name}.mlp.{fc}.weight'], weights.get(f'{module.name}.mlp.{fc}.bias'))
                      for fc in ('fc1', 'fc2')]
            bias = mlp_bias(layers, window, module.mode, module.pretrained_window, module.prefix_tokens)
        elif module.kind == 'per_head_table':
            bias = per_head_table_bias(weights[f'{module.name}.{TABLE}'], window)
        else:
            bias = flat_table_bias(weights[f'{module.name}.{TABLE}'], window, module.prefix_tokens)
        biases[f'{module.name}.{BIAS}'] = bias.float()
    return biases


class RelPosModules(Family):
    """Mixin for a family whose attention is biased by relative-position modules: their windows in the geometry,
    their tables in the resample, their biases as derived tensors."""

    def rel_pos_window(self, module: str, geometry: Geometry) -> Size:
        """The window the relative-position module named ``module`` covers in a model of ``geometry``."""
        raise NotImplementedError

    def geometry(self, model: nn.Module) -> Geometry:
        windows = tuple((module.name, module.window) for module in rel_pos_modules(model))
        return dataclasses.replace(super().geometry(model), rel_pos_windows=windows)

    def expected_geometry(self, source: Geometry, target: Target) -> Geometry:
        expected = super().expected_geometry(source, target)
        windows = tuple((name, self.rel_pos_window(name, expected)) for name, _ in source.rel_pos_windows)
        return dataclasses.replace(expected, rel_pos_windows=windows)

    def resample_state_dict(self, state_dict, source, target, interpolation, antialias):
        out = super().resample_state_dict(state_dict, source, target, interpolation, antialias)
        out.update(resample_tables(state_dict, source, target))
        return out

    def derived_tensors(self, model):
        return attention_biases(model)

    def expected_derived_tensors(self, weights, spec, source, computed):
        return expected_attention_biases(weights, rel_pos_modules(meta_model(spec)), dict(computed.rel_pos_windows))
