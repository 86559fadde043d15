"""EfficientViT-MSRA fidelity in a script: each stage's attention-bias tables resized from its source window to
its target one (LeViT's recipe, :mod:`harness.reference.offset_bias`), and the per-token-pair bias each attention
adds at its target window, as the harness computes them (:mod:`harness.families.efficientvit_msra`)."""
from __future__ import annotations

from harness.families.efficientvit_msra import expected_offset_biases, offset_biases, resample_stage_tables
from harness.repro.case import ReproCase
from harness.repro.snippets import FidelityParts, Snippet, fidelity_snippet, kernel_lines, register_snippet


@register_snippet('fidelity', family='efficientvit_msra')
def efficientvit_msra_fidelity(case: ReproCase) -> Snippet:
    old, new = (tuple(window[0] for window in geometry.window_sizes) for geometry in (case.source, case.computed))
    lines, functions = kernel_lines(case)
    lines += ['# each stage: (its window side in the checkpoint, at the target: the shorter side decides)',
              f'windows = {dict(enumerate(zip(old, new)))!r}',
              'expected.update(resample_stage_tables(reference, windows))']
    return fidelity_snippet(case, FidelityParts(
        tuple(lines), (*functions, resample_stage_tables, offset_biases, expected_offset_biases),
        derived=('offset_biases(model)', f'expected_offset_biases(expected, {list(new)!r})')))
