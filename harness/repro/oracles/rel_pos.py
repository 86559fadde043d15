"""BEiT, relative-position ViT and MaxxViT fidelity in a script: every relative-position table resampled from its
module's source window to its target one, and the bias every module adds at its target window (from a table or
an MLP), as the harness computes them (:mod:`harness.families.rel_pos`); the ViTs' position embedding and patch
kernel as :mod:`.vit` resamples them."""
from __future__ import annotations

import dataclasses

from harness.families.base import meta_model
from harness.families.rel_pos import (
    RelPosModule,
    attention_biases,
    expected_attention_biases,
    rel_pos_modules,
    resample_window_tables,
)
from harness.repro.case import ReproCase
from harness.repro.inline import assignment
from harness.repro.oracles.vit import vit_weight_lines
from harness.repro.snippets import FidelityParts, Snippet, fidelity_snippet, kernel_lines, register_snippet


def rel_pos_parts(case: ReproCase, lines: list[str], functions: tuple) -> FidelityParts:
    """``lines`` (``expected`` so far), then every table whose window changes resampled; the biases as derived
    tensors."""
    new_windows = dict(case.computed.rel_pos_windows)
    windows = {name: (old, new_windows[name]) for name, old in case.source.rel_pos_windows}
    modules = rel_pos_modules(meta_model(case.model))
    lines = [*lines, '# each relative-position module: (its source window, its window at the target)',
             *assignment('windows', windows).splitlines(),
             'expected.update(resample_window_tables(reference, windows))',
             "# what each module holds (its kind, class-token rows, an MLP's mode), as the checkpoint's model says",
             'modules = [', *(f'    {_spelled(module)},' for module in modules), ']',
             'new_windows = {name: new for name, (_, new) in windows.items()}']
    return FidelityParts(tuple(lines), (*functions, resample_window_tables, attention_biases,
                                        expected_attention_biases),
                         derived=('attention_biases(model)', 'expected_attention_biases(expected, modules, '
                                                             'new_windows)'))



def _spelled(module: RelPosModule) -> str:
    """``RelPosModule('blocks.0.attn', 'table', (4, 6), 1)``: its fields up to the last that is not a default."""
    values = [getattr(module, f.name) for f in dataclasses.fields(module)]
    defaults = [f.default for f in dataclasses.fields(module)]
    while values[-1] == defaults[len(values) - 1]:
        values.pop()
    return f'RelPosModule({", ".join(map(repr, values))})'


@register_snippet('fidelity', family='beit')
@register_snippet('fidelity', family='vit_relpos')
def grid_rel_pos_fidelity(case: ReproCase) -> Snippet:
    return fidelity_snippet(case, rel_pos_parts(case, *vit_weight_lines(case)))


@register_snippet('fidelity', family='maxxvit')
def maxxvit_fidelity(case: ReproCase) -> Snippet:
    return fidelity_snippet(case, rel_pos_parts(case, *kernel_lines(case)))
