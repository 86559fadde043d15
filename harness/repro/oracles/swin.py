"""Swin fidelity in a script: relative position bias tables (and the patch kernel) as the harness resamples
them; for ``dynamic_img_size``, the source model with the harness's own shifted-window masks."""
from __future__ import annotations

import re

import torch

from harness.families.windowed import masked_source_model
from harness.reference.rel_pos_table import resample_rel_pos_table
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


def dynamic_lines(case: ReproCase) -> list[str]:
    """``grid``, ``windows`` and ``shifts``: the patch grid at the target, and per stage the window and shift the
    path computes with (every shifted-window family's)."""
    computed = case.computed
    return [f'grid = {computed.grid_size}   # the patch grid at the target',
            '# per stage: the window and shift the path computes with',
            f'windows, shifts = {computed.window_sizes}, {computed.shift_sizes}']


@register_snippet('fidelity', family='swin')
def swin_fidelity(case: ReproCase) -> Snippet:
    source, computed, tol = case.source, case.computed, case.tolerances
    if case.path == 'dynamic':   # windows and tables stay the source's; only the masks follow the input
        lines = (*dynamic_lines(case), "oracle = masked_source_model(native, 'layers', grid, windows, shifts)",
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
