"""NaFlexVit fidelity in a script: it resamples its position table on every forward, so on every path the script
compares the logits with a NaFlexVit whose table is the harness's resample at the target grid, and what the
model adds as position embedding at two probe grids with the harness's resample there
(:mod:`harness.families.naflexvit`, :mod:`harness.reference.naflex_pos_embed`)."""
from __future__ import annotations

from harness.families.naflexvit import added_pos_embeds, expected_added_pos_embeds, tables_at
from harness.repro import steps
from harness.repro.case import ReproCase
from harness.repro.inline import assignment
from harness.repro.snippets import FidelityParts, Snippet, fidelity_snippet, register_snippet


@register_snippet('fidelity', family='naflexvit')
def naflexvit_fidelity(case: ReproCase) -> Snippet:
    grid, settings = case.computed.grid_size, case.source.table
    lines = ["expected = dict(reference)   # the oracle: loading resamples nothing, the tables stay at their own grid",
             "# how the checkpoint's model resamples its tables (None: it has none)",
             *assignment('settings', settings).splitlines(), f'grid = {grid}   # the patch grid at the target']
    if settings.kind:
        lines.append('tables = tables_at(settings, expected, grid)   # the harness\'s resample to the target grid')
        oracle = 'carrying(MODEL, {**SOURCE, **at_grid}, {**expected, **tables})'
    else:
        oracle = 'carrying(MODEL, {**SOURCE, **at_grid}, expected)'
    lines.append("at_grid = {'pos_embed_grid_size': grid, 'pos_embed_ar_preserving': False}   # added as it is")
    return fidelity_snippet(case, FidelityParts(
        tuple(lines), (tables_at, added_pos_embeds, expected_added_pos_embeds, steps.carrying),
        derived=('added_pos_embeds(model)', 'expected_added_pos_embeds(settings, expected)'), oracle=oracle))
