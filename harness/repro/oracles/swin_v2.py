"""Swin-V2 and Swin-V2-CR fidelity in a script: nothing of theirs is resampled but the patch kernel, so on every
path the script compares what their forward steps compute at the target, as the harness does: the attention
masks and windows every block forms (:mod:`harness.families.windowed`) and each block's continuous position bias,
its coordinates and the bias the checkpoint's MLP gives them (:mod:`harness.reference.cpb`); for
``dynamic_img_size``, the logits too, against the source model given the harness's masks."""
from __future__ import annotations

from harness.families.swin_v2 import cpb_tensors, expected_cpb_tensors, pretrained_windows
from harness.families.swin_v2_cr import cr_cpb_tensors, expected_cr_cpb_tensors
from harness.families.windowed import expected_window_tensors, masked_source_model, window_forward_tensors
from harness.repro.case import ReproCase
from harness.repro.oracles.swin import dynamic_lines
from harness.repro.snippets import FidelityParts, Snippet, fidelity_snippet, kernel_lines, register_snippet


def shifted_window_parts(case: ReproCase, cpb: tuple[str, str], functions: tuple, lines: tuple = ()) -> FidelityParts:
    """The kernel, the target's windows (``lines`` after them), and the forward tensors: the family's
    ``cpb`` (read off ``model``, the harness's) beside every block's masks and windows."""
    stages = case.family.stages_attr
    kernel, kernel_functions = kernel_lines(case)
    lines = (*kernel, *dynamic_lines(case), f'depths = {case.computed.stage_depths}', *lines)
    functions = (*kernel_functions, *functions, window_forward_tensors, expected_window_tensors, masked_source_model)
    return FidelityParts(
        lines, functions,
        forward=((f'window_forward_tensors(model, {stages!r}, grid)', cpb[0]),
                 (f'expected_window_tensors({stages!r}, grid, windows, shifts, depths)', cpb[1])),
        oracle=f'masked_source_model(native, {stages!r}, grid, windows, shifts)', uses=('native',))


@register_snippet('fidelity', family='swin_v2')
def swin_v2_fidelity(case: ReproCase) -> Snippet:
    pretrained = pretrained_windows(case.model)
    return fidelity_snippet(case, shifted_window_parts(
        case, ('cpb_tensors(model)', 'expected_cpb_tensors(expected, windows, depths, trained_windows)'),
        (cpb_tensors, expected_cpb_tensors),
        (f'trained_windows = {pretrained}   # per stage: coordinates are normalised by it ((0, 0): its own)',)))


@register_snippet('fidelity', family='swin_v2_cr')
def swin_v2_cr_fidelity(case: ReproCase) -> Snippet:
    return fidelity_snippet(case, shifted_window_parts(
        case, ('cr_cpb_tensors(model)', 'expected_cr_cpb_tensors(expected, windows, depths)'),
        (cr_cpb_tensors, expected_cr_cpb_tensors)))
