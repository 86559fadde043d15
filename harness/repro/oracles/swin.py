"""Swin fidelity in a script: relative position bias tables (and the patch kernel) as the harness resamples
them; for ``dynamic_img_size``, the source model with the harness's own shifted-window masks."""
from __future__ import annotations

import copy
import re

import torch
from torch import nn

from harness.families.windowed import stage_grid
from harness.reference.rel_pos_table import resample_rel_pos_table
from harness.reference.window_masks import shifted_window_mask
from harness.repro import steps
from harness.repro.case import ReproCase
from harness.repro.snippets import Snippet, kernel_lines, register_snippet


def resample_tables(state: dict[str, torch.Tensor], windows: dict[int, tuple]) -> dict[str, torch.Tensor]:
    """Every relative position bias table of a stage in ``windows`` (stage: (old window, new window)), resampled."""
    out = {}
    for key, table in state.items():
        found = re.search(r'layers\.(\d+)\.blocks\.\d+\.attn\.relative_position_bias_table$', key)
        if found and int(found.group(1)) in windows:
            out[key] = resample_rel_pos_table(table, *windows[int(found.group(1))])
    return out


def masked_source_model(native: nn.Module, grids: list, windows: list, shifts: list) -> nn.Module:
    """The source model (its windows, shifts and tables) given, per stage, the harness's own attention mask for
    that stage's grid at the target size: what dynamic_img_size is documented to compute."""
    model = copy.deepcopy(native)
    model.patch_embed.strict_img_size = False
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            block.dynamic_mask = False
            block.attn_mask = shifted_window_mask(grids[i], windows[i], shifts[i] if j % 2 else (0, 0))
    return model.eval()


@register_snippet('fidelity', family='swin')
def swin_fidelity(case: ReproCase) -> Snippet:
    source, computed, tol = case.source, case.computed, case.tolerances
    if case.path == 'dynamic':   # windows and tables stay the source's; only the masks follow the input
        grids = [stage_grid(computed.grid_size, i) for i in range(len(computed.stage_depths))]
        lines = ("# per stage: its grid at the target size, its window and shift (the source's)",
                 f'grids = {grids}', f'windows = {list(computed.window_sizes)}',
                 f'shifts = {list(computed.shift_sizes)}',
                 'oracle = masked_source_model(native, grids, windows, shifts)',
                 f'check_outputs(outputs[1], forward(oracle, inputs)[1], atol={tol.fidelity_outputs_atol!r})')
        return Snippet(lines, (masked_source_model, steps.check_outputs), uses=('native', 'outputs'))
    lines, functions = kernel_lines(case)
    windows = {stage: (old, new) for stage, (old, new) in enumerate(zip(source.window_sizes, computed.window_sizes))
               if old != new}
    if windows:
        lines += [f'windows = {windows!r}   # stage: (old window, new window)',
                  'expected.update(resample_tables(reference, windows))']
        functions += (resample_tables,)
    return Snippet((*lines, f"check_weights('fidelity', model, expected, atol={tol.fidelity_weights_atol!r})"),
                   (*functions, steps.check_weights), uses=('reference', 'model'))
