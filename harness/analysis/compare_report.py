"""compare.md and compare.json: what :mod:`harness.analysis.compare` found, regressions first.

compare.md is meant to be read on a phone from a CI notification: a one-line summary, the findings (the new side's
failed and regressed cases grouped by root cause, :mod:`harness.analysis.findings`), then one short table per kind of
change, worst first, with few columns. compare.json holds every case for machines.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pandas as pd

from harness.analysis.compare import (
    CHANGES,
    TIMING_CHANGES,
    CaseComparison,
    CompareFiles,
    CompareSpec,
    Side,
    shared_shift,
)
from harness.analysis.findings import Source, compare_cases, report_of
from harness.store import schema
from harness.store.atomic_file import write_atomically

# the tables of compare.md, worst first: (title, the column that selects the cases, its value)
TABLES = (('Regressed', 'change', 'regressed'), ('Slower', 'timing_change', 'slower'),
          ('Not comparable', 'change', 'not_comparable'), ('Outputs changed', 'change', 'outputs_changed'),
          ('Fixed', 'change', 'fixed'), ('Faster', 'timing_change', 'faster'), ('Noisy', 'timing_change', 'noisy'),
          ('New', 'change', 'new'), ('Removed', 'change', 'removed'))
STATUS_COLUMNS = {'case_id': 'case', 'base_status': 'base', 'new_status': 'new', 'detail': 'detail'}
TIMING_COLUMNS = {'case_id': 'case', 'ratio': 'ratio', 'p_value': 'p', 'detail': 'detail'}


def summary_line(comparisons: list[CaseComparison]) -> str:
    """e.g. ``12 cases: 1 regressed, 11 unchanged; timing: 1 slower, 10 same, 1 not_comparable``."""
    changes = Counter(c.change for c in comparisons)
    timings = Counter(c.timing_change for c in comparisons)
    return (f'{len(comparisons)} cases: ' + ', '.join(f'{changes[k]} {k}' for k in CHANGES if changes[k])
            + '; timing: ' + (', '.join(f'{timings[k]} {k}' for k in TIMING_CHANGES if timings[k]) or 'none'))


def render_markdown(base: Side, new: Side, spec: CompareSpec, comparisons: list[CaseComparison]) -> str:
    lines = [f'# Compare: {_describe(base)} → {_describe(new)}', '',
             f'**{summary_line(comparisons)}**', '', *findings_section(new, comparisons),
             f'Timing changes need a two-sided Mann-Whitney U p < {spec.alpha:g} and a median ratio beyond '
             f'{spec.factor:g}x, and, for interleaved rounds (harness ab), every round agreeing; outputs changes '
             f'are fingerprint or check figures moving more than {spec.outputs_atol:g}.', '']
    warning = shared_shift(base, new, comparisons)
    if warning:
        lines += [f'**Warning:** {warning}.', '']
    frame = pd.DataFrame([dataclasses.asdict(c) for c in comparisons], columns=CaseComparison.__dataclass_fields__)
    for title, column, value in TABLES:
        rows = frame[frame[column] == value]
        if rows.empty:
            continue
        columns = TIMING_COLUMNS if column == 'timing_change' else STATUS_COLUMNS
        table = rows[list(columns)].rename(columns=columns).to_markdown(index=False, floatfmt='.3g')
        lines += [f'## {title} ({len(rows)})', '', table, '']
    return '\n'.join(lines)


def findings_section(new: Side, comparisons: list[CaseComparison]) -> list[str]:
    """The new side's failed and xpassed cases and the cases that regressed, grouped by root cause; none: no
    lines."""
    regressed = {(c.matrix, c.case_id) for c in comparisons if c.change == 'regressed'}
    cases = compare_cases(new.records, regressed)
    if not cases:
        return []
    label = Path(new.label)
    release = new.run.timm_version if new.run else None
    report = report_of(new.label, Source('compare', cases, label if label.is_dir() else label.parent, release))
    return ['## Findings', '', *report.markdown_section('###'), '']


def to_json(base: Side, new: Side, spec: CompareSpec, comparisons: list[CaseComparison]) -> dict:
    return schema.stamped(schema.COMPARE, {
        'base': _side(base), 'new': _side(new), 'spec': dataclasses.asdict(spec),
        'summary': {'change': dict(Counter(c.change for c in comparisons)),
                    'timing_change': dict(Counter(c.timing_change for c in comparisons))},
        'warnings': list(filter(None, [shared_shift(base, new, comparisons)])),
        'cases': [dataclasses.asdict(c) for c in comparisons]})


def write_compare(out_dir: Path, base: Side, new: Side, spec: CompareSpec,
                  comparisons: list[CaseComparison]) -> CompareFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = CompareFiles.in_folder(out_dir)
    write_atomically(files.markdown, render_markdown(base, new, spec, comparisons))
    write_atomically(files.json, json.dumps(to_json(base, new, spec, comparisons), indent=2) + '\n')
    return files


def _side(side: Side) -> dict:
    return {'label': side.label, 'run': dataclasses.asdict(side.run) if side.run else None}


def _describe(side: Side) -> str:
    if side.run is None:
        return f'{side.label} (no run.json)'
    return f'{side.label} (timm {side.run.timm_version}, {side.run.device_name or side.run.device})'
