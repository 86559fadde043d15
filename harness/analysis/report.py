"""Render a results.jsonl as a markdown report plus CSVs.

The CSVs keep every figure at full precision; the markdown formats them for reading, with its prose, lists and
reasons wrapped to a 100-column terminal (the wide figure tables cannot be). Every table that holds
figures says how they were measured: the header lists the timm/torch versions, device, dtype, batch size and
timing budget, and when cases disagree on any of those, the per-case tables carry a column for it.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness import results
from harness.analysis.findings import FINDING_STATUSES, findings_of
from harness.analysis.report_format import (
    NULL,
    Formatter,
    as_giga,
    as_number,
    as_percent,
    as_reason,
    as_sci,
    as_size,
    as_text,
    as_yes_no,
    distinct,
    github_table,
    is_null,
    n_cases,
    wrapped,
)
from harness.analysis.report_html import HtmlInputs, render_html
from harness.case.check_registry import REGISTRY, Check, registered
from harness.repro import REPRODUCIBLE, repro_command
from harness.results import INT_FIELDS, path_rank, unsupported_groups
from harness.store.atomic_file import write_atomically
from harness.store.case_result import STATUSES, UNEXPECTED
from harness.store.run_record import RunRecordError, read_run_record
from harness.store.run_settings import MEASUREMENT

IDENTITY = ('model', 'origin', 'img_size', 'patch_size', 'window_size', 'path')
# the report's "How this was measured": every measurement setting, the device shown with its name
MEASURED = {('device_label' if setting.name == 'device' else setting.name): setting.described
            for setting in MEASUREMENT if setting.name != 'device_name'}
HEADERS = {'device_label': 'device', 'time_median_ms': 'median ms', 'time_iqr_ms': 'IQR ms', 'time_min_ms': 'min ms',
           'time_p90_ms': 'p90 ms', 'time_p99_ms': 'p99 ms', 'time_cv': 'CV', 'timing_stable': 'stable',
           'timing_repeats': 'timed passes', 'batch_size_used': 'batch used', 'achieved_tflops': 'TFLOP/s',
           'peak_fraction': 'of peak', 'flops_per_image': 'GFLOP/image',
           'images_per_s': 'images/s', 'peak_memory_mb': 'peak memory MB', 'accuracy_top1_native': 'top-1 native',
           'accuracy_top1': 'top-1', 'accuracy_images': 'labelled images'}   # a check's columns: _check_headers
PRECISION_WORDS = {'amp': 'under autocast', 'cast': 'with weights and inputs cast to the dtype'}


@dataclass
class ReportFiles:
    markdown: Path
    csv: Path           # all records, one row per case, every field
    summary_csv: Path   # the status summary table: (model, origin) x path
    html: Path          # report.html: the same, with plots, in one file that opens from disk

    @classmethod
    def in_folder(cls, out_dir: Path) -> ReportFiles:
        return cls(markdown=out_dir / 'report.md', csv=out_dir / 'results.csv', summary_csv=out_dir / 'summary.csv',
                   html=out_dir / 'report.html')


# --- loading -------------------------------------------------------------------------------------------------

def _window_cell(window: Any) -> str:
    """7 or 8x12, as case ids spell windows."""
    if is_null(window):
        return NULL
    if isinstance(window, (list, tuple)):
        return 'x'.join(map(str, window))
    return str(int(window))   # a column of ints and nulls reads as floats


def _csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """List and mapping fields (img_size, failed_checks, output_fingerprint, ...) as JSON text, so they parse
    back unambiguously."""
    return frame.apply(lambda col: col.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v))


# --- formatting (the cells themselves: harness.analysis.report_format) ---------------------------------------------

def _view(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as the markdown shows it: text identity, HxW sizes, one-line reasons, device with its name."""
    view = frame.copy()
    for column in ('case_id', 'model', 'origin', 'path', 'status', 'timm_version', 'torch_version', 'dtype'):
        view[column] = view[column].map(as_text)
    view['img_size'] = view['img_size'].map(as_size)
    view['failed_checks'] = view['failed_checks'].map(lambda v: ', '.join(v) if isinstance(v, list) and v else NULL)
    view['reason'] = view['reason'].map(as_reason)   # whole: the failures list wraps it
    view['device_label'] = [as_text(d) + (f' ({n})' if not is_null(n) and n else '')
                            for d, n in zip(view['device'], view['device_name'])]
    return view


def _cells(view: pd.DataFrame, columns: dict[str, Formatter]) -> pd.DataFrame:
    headers = {**HEADERS, **_check_headers()}
    return pd.DataFrame({headers.get(c, c): view[c].map(fmt) for c, fmt in columns.items()})


def _check_headers() -> dict[str, str]:
    """The headers of the registered checks' columns: a figure's own, a note's '<check> not judged'."""
    return {**{f.field: f.header for check in registered() for f in check.figures if f.header},
            **{check.note: f'{check.name} not judged' for check in registered() if check.note}}


def _varying(view: pd.DataFrame) -> dict[str, Formatter]:
    """Columns for the measurement settings that differ between cases, so each figure stays traceable."""
    return {c: as_text for c in MEASURED if view[c].dropna().map(as_text).nunique() > 1}


def _status_order(counts: Counter) -> list[str]:
    return [*STATUSES, *sorted(set(counts) - set(STATUSES))]


def _status_counts(statuses: Iterable[str]) -> str:
    counts = Counter(statuses)
    return ', '.join(f'{counts[s]} {s}' for s in _status_order(counts) if counts[s])


# --- sections ------------------------------------------------------------------------------------------------

def _header(view: pd.DataFrame, results_path: Path) -> list[str]:
    names = ', '.join(dict.fromkeys(view['matrix'].map(as_text))) or NULL
    newest = pd.to_datetime(view['finished_at'], utc=True, errors='coerce', format='ISO8601')
    lines = [f'# Resize regression report: {names}', '', '## How this was measured', '']
    lines += [f'- {label}: {distinct(view[column])}' for column, label in MEASURED.items()]
    lines += [f'- newest record: {view["finished_at"][newest.idxmax()] if newest.notna().any() else NULL}',
              f'- results file: `{results_path}`']
    if _varying(view):
        lines.append('- Cases disagree on some settings above: the per-case tables show them in their own columns.')
    return lines


def _totals(view: pd.DataFrame) -> list[str]:
    counts = Counter(view['status'])
    per_status = ', '.join(f'{counts[s]} {s}' for s in _status_order(counts))
    return [f'**Totals:** {n_cases(len(view))}: {per_status}']


def summary_frame(view: pd.DataFrame) -> pd.DataFrame:
    """(model, origin) rows, one column per path, each cell like '2 passed, 1 failed'."""
    paths = sorted(view['path'].unique(), key=path_rank)
    table = view.groupby(['model', 'origin', 'path'], sort=False)['status'].agg(_status_counts).unstack('path')
    return table.reindex(columns=paths).fillna(NULL).reset_index().rename_axis(columns=None)


def _summary(summary: pd.DataFrame) -> list[str]:
    return ['## Summary: status per model × origin × path', '', github_table(summary)]


def _findings(view: pd.DataFrame, results_path: Path) -> list[str]:
    """The failed and xpassed cases grouped by root cause (:mod:`harness.analysis.findings`), when there are any."""
    if not view['status'].isin(FINDING_STATUSES).any():
        return []
    report = findings_of(results_path)
    return ['## Findings', '', *report.markdown_section('###')]


def _failures(view: pd.DataFrame) -> list[str]:
    """Each unexpected and xfailed case with its failed checks and its whole reason, wrapped."""
    lists = [(title, '\n'.join(_failure(r) for r in rows.to_dict('records'))) for title, rows in (
        ('Unexpected: failed, error, xpassed, resource', view[view['status'].isin(UNEXPECTED)]),
        ('Expected failures (xfailed)', view[view['status'] == 'xfailed'])) if len(rows)]
    return ['## Failures', *(f'\n### {title}\n\n{items}' for title, items in lists)] if lists else []


def _failure(record: dict) -> str:
    """'- **failed** `case-id` (parity)' and the reason below it, indented, whole."""
    checks = f' ({record["failed_checks"]})' if record['failed_checks'] != NULL else ''
    return f'- **{record["status"]}** `{record["case_id"]}`{checks}\n' + wrapped(record['reason'], indent='  ')


def _unsupported(frame: pd.DataFrame) -> list[str]:
    """Why cases are unsupported, one line per reason with its case count and paths."""
    groups = unsupported_groups(frame)
    if not groups:
        return []
    count = sum(len(g.case_ids) for g in groups)
    intro = (f'{n_cases(count)} unsupported: this timm release cannot make the call their path needs, and every '
             f'check that could run held. By reason (each case\'s own reason, with the checks that held, is in '
             f'results.csv):')
    return ['## Unsupported', '', wrapped(intro), '',
            *(wrapped(f'{g.why} ({n_cases(len(g.case_ids))}; {", ".join(g.paths)})', indent='  ', first='- ')
              for g in groups)]


def _reproduce(view: pd.DataFrame, run_dir: Path) -> list[str]:
    """For each failed or xfailed case, the command that writes a standalone script reproducing it."""
    cases = view[view['status'].isin(REPRODUCIBLE)]['case_id']
    if cases.empty:
        return []
    return ['### Reproduce upstream', '', wrapped('Each command writes a script that needs only torch and timm and '
                                                'exits 1 while the failure reproduces (README: *Reporting a bug '
                                                'upstream*):'), '', '```bash',
            *(repro_command(run_dir, case_id) for case_id in cases), '```']


def _identity() -> dict[str, Formatter]:
    return {c: as_number('d') if c in INT_FIELDS else _window_cell if c == 'window_size' else str for c in IDENTITY}


def _drift(view: pd.DataFrame) -> list[str]:
    has_accuracy = view['accuracy_top1_native'].notna().any()
    accuracy = {'accuracy_top1_native': as_number('.4f'), 'accuracy_top1': as_number('.4f'),
                'accuracy_images': as_number('d')} if has_accuracy else {}
    drift = REGISTRY['drift']   # first, beside the accuracy it is read with
    figures = {'status': str, **_check_columns([drift]), **accuracy,
               **_check_columns([c for c in registered() if c is not drift])}
    intro = ('Drift (the pooled-feature cosine and top-1 agreement of the target-size model with the native-size '
             'one) is recorded, not judged: a low drift figure beside `passed` is not a failure, unless the matrix '
             'sets `drift_min_cosine` or `drift_min_top1` (a case failing them lists `drift` among its failed '
             'checks). Parity figures are judged only between paths that compute the same model and both pass '
             'fidelity; the last column says why a row\'s were recorded, not judged (`parity_note` in the CSV has '
             'the details).')
    if has_accuracy:
        intro += (' Drift is agreement with the native-size model on the synthetic image set; top-1 is accuracy on '
                  'the labelled images at the native size and at the target, recorded for real weights (hub, '
                  f'file) only: {NULL} for synthesized ones, whose accuracy means nothing.')
    cells = _cells(view, {**_identity(), **figures, **_varying(view)})
    return ['## Drift and fidelity', '', wrapped(intro), '', github_table(cells)]


def _check_columns(checks: list[Check]) -> dict[str, Formatter]:
    """The checks' figures that have a column in the drift and fidelity table, then the notes saying why a
    check's figures were recorded and not judged."""
    columns = {f.field: as_sci if f.column == 'sci' else as_number(f.column)
               for check in checks for f in check.figures if f.column}
    return {**columns, **{check.note: _not_judged for check in checks if check.note}}


def _not_judged(note: Any) -> str:
    """The gist of a note: "documented difference", "the create path fails fidelity", ..."""
    if is_null(note):
        return NULL
    gist = str(note).removeprefix('not judged: ')
    return gist.split(':')[0] if gist.startswith('documented difference') else gist.split(' (')[0]


def _timing_caption(view: pd.DataFrame) -> str:
    on_cpu = view['device'].map(as_text).str.lower() == 'cpu'
    kind = ('**CPU timings** (not representative of accelerator speed)' if on_cpu.all()
            else '**Mixed devices, CPU timings included**: compare rows only within one device' if on_cpu.any()
            else 'Timings')
    caption = (f'{kind}. Device {distinct(view["device_label"])}; dtype {distinct(view["dtype"])}; '
               f'batch size {distinct(view["batch_size"])}; budget {distinct(view["timing_budget_s"])} s per case '
               f'for warm-up and timed passes together{_median_rse(view)}; median and IQR over '
               f'{_passes(view["timing_repeats"])} timed passes per case. Timed {_how_timed(view)}.')
    over = _over_budget(view)
    if over:
        caption += (f' {n_cases(over)} took longer than the budget: the minimum number of timed passes alone '
                    f'exceeded it.')
    return caption + _busy(view)


def _busy(view: pd.DataFrame) -> str:
    """' **Busy machine**: ...' when cases were timed while the load average exceeded the cores: other work
    then waited for a core, so those timings are slower and vary more than the machine alone gives."""
    loads = view[['load_average_start', 'load_average_end']].apply(pd.to_numeric, errors='coerce').max(axis=1)
    busy = (loads > pd.to_numeric(view['cpu_cores'], errors='coerce')).fillna(False).astype(bool)
    if not busy.any():
        return ''
    return (f' **Busy machine**: {n_cases(int(busy.sum()))} of {len(view)} timed while the 1-minute load average '
            f'(up to {loads[busy].max():.1f}) exceeded the {distinct(view.loc[busy, "cpu_cores"])} cores: other '
            f'work shared the CPU, so those timings are slower and vary more than this machine alone gives.')


def _how_timed(view: pd.DataFrame) -> str:
    """'eager' or 'through torch.compile, with weights and inputs cast to the dtype, in channels-last; 2 cases
    not stable (CV above 0.05)'."""
    compiled = view['compile'].eq(True)
    parts = ['through torch.compile' if compiled.all() else f'through torch.compile in {n_cases(compiled.sum())}'
             if compiled.any() else 'eager']
    reduced = view['dtype'].isin(('bf16', 'fp16'))
    if reduced.any():
        parts.append(distinct(view.loc[reduced, 'precision'].map(lambda p: PRECISION_WORDS.get(p, p))))
    if view['channels_last'].eq(True).any():
        parts.append('in channels-last')
    unstable = int(view['timing_stable'].eq(False).sum())
    stability = f'; {n_cases(unstable)} not stable (CV above {distinct(view["timing_max_cv"])})' if unstable else ''
    return ', '.join(parts) + stability


def _median_rse(view: pd.DataFrame) -> str:
    """How timing ended early, when it could: ', ended once the median was known to 2%'."""
    targets = view['timing_median_rse'].dropna()
    targets = targets[targets > 0]
    if targets.empty:
        return ''
    return f', ended once the median was known to {distinct(f"{t:.0%}" for t in targets)} (standard error)'


def _passes(repeats: pd.Series) -> str:
    """'7', or '7–31' when the budget let cases run different numbers of timed passes."""
    counts = repeats.dropna()
    if counts.empty:
        return NULL
    low, high = counts.min(), counts.max()
    return str(low) if low == high else f'{low}–{high}'


def _over_budget(view: pd.DataFrame) -> int:
    """Cases whose timed passes alone took longer than their budget (the min_repeats floor won)."""
    return sum(isinstance(samples, list) and not is_null(budget) and sum(samples) / 1000 > budget
               for samples, budget in zip(view['time_samples_ms'], view['timing_budget_s']))


TIMING_FIGURES = {'time_median_ms': as_number('.2f'), 'time_iqr_ms': as_number('.2f'), 'time_min_ms': as_number('.2f'),
                  'time_p90_ms': as_number('.2f'), 'time_p99_ms': as_number('.2f'), 'time_cv': as_percent,
                  'timing_stable': as_yes_no, 'timing_repeats': as_number('d'), 'batch_size_used': as_number('d'),
                  'images_per_s': as_number('.1f'), 'flops_per_image': as_giga, 'achieved_tflops': as_number('.3g'),
                  'peak_fraction': as_percent, 'peak_memory_mb': as_number('.1f')}


def timing_table(view: pd.DataFrame) -> tuple[str, pd.DataFrame] | None:
    """The timed cases' caption and formatted cells, or None when no case was timed."""
    timed = view[view[list(TIMING_FIGURES)].notna().any(axis=1)]
    if timed.empty:
        return None
    return _timing_caption(timed), _cells(timed, {**_identity(), **TIMING_FIGURES, **_varying(timed)})


def _timing(view: pd.DataFrame) -> list[str]:
    table = timing_table(view)
    if table is None:
        return ['## Timing', '', 'No timing figures recorded.']
    caption, cells = table
    return ['## Timing', '', wrapped(caption), '', github_table(cells)]


def render_markdown(view: pd.DataFrame, summary: pd.DataFrame, results_path: Path) -> str:
    if view.empty:
        return f'# Resize regression report\n\nNo results recorded in `{results_path}`.\n'
    sections = [_header(view, results_path), _totals(view), _findings(view, results_path), _summary(summary),
                _failures(view),
                _reproduce(view, results_path.parent), _unsupported(view), _drift(view), _timing(view)]
    return '\n\n'.join('\n'.join(lines) for lines in sections if lines) + '\n'


def write_report(results_path: Path, out_dir: Path) -> ReportFiles:
    """Read results.jsonl and write <out_dir>/report.md, report.html, results.csv and summary.csv (each replaced
    whole: a reader, or a run killed mid-write, never meets half a file). report.html describes the run with the
    run.json beside ``results_path``, when there is one."""
    results_path, out_dir = Path(results_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = ReportFiles.in_folder(out_dir)
    frame = results.load(results_path)
    write_atomically(files.csv, _csv_frame(frame).to_csv(index=False))
    view = _view(frame)
    summary = summary_frame(view) if len(view) else pd.DataFrame(columns=['model', 'origin'])
    write_atomically(files.summary_csv, summary.to_csv(index=False))
    write_atomically(files.markdown, render_markdown(view, summary, results_path))
    try:
        run = read_run_record(results_path.parent)
    except RunRecordError:   # the results are still worth a report; the environment then comes from them
        run = None
    timing = timing_table(view) if len(view) else None
    write_atomically(files.html, render_html(HtmlInputs(frame, summary, timing, results_path, run)))
    return files
