"""report.html: a run in one self-contained file that opens from disk, with plots.

Sections: the findings (the failed and xpassed cases grouped by root cause, :mod:`harness.analysis.findings`), the
status grid (model × origin × path), plots of throughput and drift against input size for each
model (one line per path), the distribution of every timed case's passes, the timing table (percentiles,
CV, FLOPs, TFLOP/s and the fraction of the device's peak), failures with their full reasons, the unsupported
cases grouped by reason, and the run's environment (run.json when it is beside the results).

The plots are drawn by pygal, which writes SVG itself, and inlined: no script (pygal's tooltip script, which
it would load from elsewhere, is turned off), no stylesheet or font from elsewhere, so the file reads the same
from a CI artifact, an e-mail or a laptop without network, and prints. See README "report.html" for why
pygal.
"""
from __future__ import annotations

import dataclasses
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness.analysis.findings import CHANGE_WORDS, FINDING_STATUSES, Finding, findings_of
from harness.repro import REPRODUCIBLE, repro_command
from harness.results import path_rank, unsupported_groups
from harness.store.case_result import UNEXPECTED
from harness.store.run_record import RunRecord
from harness.store.run_settings import MEASUREMENT

PATH_COLOURS = {'create': '#1f77b4', 'set_input_size': '#ff7f0e', 'dynamic': '#2ca02c'}
STATUS_CLASSES = {'failed': 'bad', 'xpassed': 'bad', 'error': 'bad', 'resource': 'bad', 'xfailed': 'expected',
                  'passed': 'good', 'unsupported': 'muted'}   # a summary cell takes the first that it counts
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.good { background: #e6f4e6; } td.bad { background: #fbe3e3; } td.expected { background: #fff4d6; }
td.muted { color: #777; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; margin: 0; font-size: 0.85em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; }
figure svg { vertical-align: top; } .wide { overflow-x: auto; }
"""


@dataclass(frozen=True)
class HtmlInputs:
    frame: pd.DataFrame                           # every record, raw (harness.results.load)
    summary: pd.DataFrame                         # (model, origin) x path status counts, as report.md shows it
    timing: tuple[str, pd.DataFrame] | None       # the timing caption and formatted table (None: nothing timed)
    results_path: Path
    run: RunRecord | None                         # run.json beside the results, if any


def render_html(inputs: HtmlInputs) -> str:
    frame = inputs.frame
    names = ', '.join(dict.fromkeys(str(m) for m in frame['matrix'].dropna())) or 'no results'
    body = [f'<h1>Resize regression report: {_esc(names)}</h1>', _totals(frame)]
    if not frame.empty:
        body += [_findings(frame, inputs.results_path), _summary_grid(inputs.summary), _plots(frame),
                 _distributions(frame), _timing_table(inputs.timing),
                 _failures(frame, inputs.results_path.parent), _unsupported(frame)]
    body.append(_environment(frame, inputs.run, inputs.results_path))
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<title>{_esc(names)}: resize regression report</title>\n<style>{STYLE}</style>\n</head>\n<body>\n'
            + '\n'.join(part for part in body if part) + '\n</body>\n</html>\n')


# --- sections ------------------------------------------------------------------------------------------------

def _totals(frame: pd.DataFrame) -> str:
    counts = frame['status'].value_counts()
    return f'<p><b>{len(frame)} cases:</b> ' + _esc(', '.join(f'{n} {s}' for s, n in counts.items())) + '</p>'


def _findings(frame: pd.DataFrame, results_path: Path) -> str:
    """Each finding: its title, what it affects, the command that reproduces its representative case."""
    if not frame['status'].isin(FINDING_STATUSES).any():
        return ''
    report = findings_of(results_path)
    return (f'<h2>Findings</h2>\n<p><b>{_esc(report.summary())}</b></p>\n'
            + '\n'.join(_finding(finding) for finding in report.findings))


def _finding(finding: Finding) -> str:
    seen = f'; first seen in timm {finding.first_seen}' if finding.first_seen else ''
    seen += f', {CHANGE_WORDS[finding.change]}' if finding.change else ''
    return (f'<h3>{_esc(finding.title)}</h3>\n<ul><li>id <code>{_esc(finding.id)}</code>{_esc(seen)}</li>'
            f'<li>{len(finding.case_ids)} case{"s" * (len(finding.case_ids) != 1)} on {_esc(", ".join(finding.paths))}'
            f'; architectures: {_esc(", ".join(finding.architectures))} <details><summary>case ids</summary><pre>'
            f'{_esc(chr(10).join(finding.case_ids))}</pre></details></li>'
            f'<li>representative: <code>{_esc(finding.representative)}</code>, reproduced by '
            f'<code>{_esc(finding.repro)}</code></li></ul>')


def _summary_grid(summary: pd.DataFrame) -> str:
    rows = []
    for record in summary.to_dict('records'):
        cells = [f'<td>{_esc(record[c])}</td>' for c in ('model', 'origin')]
        cells += [f'<td class="{_status_class(record[c])}">{_esc(record[c])}</td>' for c in summary.columns[2:]]
        rows.append('<tr>' + ''.join(cells) + '</tr>')
    head = ''.join(f'<th>{_esc(c)}</th>' for c in summary.columns)
    return ('<h2>Summary: status per model × origin × path</h2>\n'
            f'<table><thead><tr>{head}</tr></thead><tbody>\n' + '\n'.join(rows) + '\n</tbody></table>')


def _status_class(cell: str) -> str:
    words = str(cell).replace(',', ' ').split()
    return next((css for status, css in STATUS_CLASSES.items() if status in words), 'muted')


def _plots(frame: pd.DataFrame) -> str:
    """Per model (and patch / window variant): throughput and drift against input size, one line per path."""
    figures = []
    for (model, patch, window), rows in _variants(frame):
        if rows[['images_per_s', 'drift_cosine']].notna().any().any():
            name = f'size-{len(figures)}'
            charts = _svg(_throughput_chart(rows), f'{name}-throughput') + _svg(_drift_chart(rows), f'{name}-drift')
            figures.append(_figure(charts, _variant_name(model, patch, window)))
    if not figures:
        return ''
    return ('<h2>Throughput and drift against input size</h2>\n<p>Throughput is the median over origins of '
            'images per second (the batch over the median pass); a hollow marker: timing not stable (CV above '
            'its limit). Drift is the pooled-feature cosine of the resized model to the native-size one, one '
            'line per origin and path: recorded, not judged, unless the matrix sets <code>drift_min_cosine</code> '
            'or <code>drift_min_top1</code>.</p>\n' + '\n'.join(figures))


def _distributions(frame: pd.DataFrame) -> str:
    timed = frame[frame['time_samples_ms'].map(lambda v: isinstance(v, list) and len(v) > 0)]
    figures = [_figure(_svg(_distribution_chart(rows), f'samples-{index}'), str(model))
               for index, (model, rows) in enumerate(timed.groupby('model', sort=False))]
    if not figures:
        return ''
    return ('<h2>Timing distributions</h2>\n<p>Every timed pass of each case, in ms (box: quartiles; whiskers: the '
            'last pass within 1.5 IQR of them; passes beyond drawn one by one).</p>\n' + '\n'.join(figures))


def _timing_table(timing: tuple[str, pd.DataFrame] | None) -> str:
    if timing is None:
        return '<h2>Timing</h2>\n<p>No timing figures recorded.</p>'
    caption, cells = timing
    caption = re.sub(r'\*\*(.+?)\*\*', r'<b>\1</b>', _esc(caption))   # the markdown caption's bold
    return (f'<h2>Timing</h2>\n<p>{caption}</p>\n<div class="wide">'
            + cells.to_html(index=False, escape=True, border=0) + '</div>')


def _failures(frame: pd.DataFrame, run_dir: Path) -> str:
    """Unexpected and xfailed cases with their full reasons; a failed or xfailed one with the `harness repro`
    command that writes its standalone reproducer."""
    shown = frame[frame['status'].isin((*UNEXPECTED, 'xfailed'))]
    if shown.empty:
        return ''
    rows = [f'<tr><td>{_esc(r["case_id"])}</td><td class="{STATUS_CLASSES.get(r["status"], "muted")}">'
            f'{_esc(r["status"])}</td><td>{_esc(", ".join(r["failed_checks"] or []))}</td>'
            f'<td><pre>{_esc(r["reason"])}</pre></td><td>{_repro_cell(r, run_dir)}</td></tr>'
            for r in shown.to_dict('records')]
    return ('<h2>Failures</h2>\n<table><thead><tr><th>case</th><th>status</th><th>failed checks</th>'
            '<th>reason (in full)</th><th>reproduce upstream</th></tr></thead><tbody>\n' + '\n'.join(rows)
            + '\n</tbody></table>')


def _unsupported(frame: pd.DataFrame) -> str:
    """One row per reason the release could not make a path's call: how many cases, their paths, their ids."""
    groups = unsupported_groups(frame)
    if not groups:
        return ''
    rows = [f'<tr><td>{len(g.case_ids)}</td><td>{_esc(", ".join(g.paths))}</td><td><pre>{_esc(g.why)}</pre></td>'
            f'<td><details><summary>{len(g.case_ids)} case ids</summary><pre>{_esc(chr(10).join(g.case_ids))}'
            '</pre></details></td></tr>' for g in groups]
    return (f'<h2>Unsupported</h2>\n<p>{sum(len(g.case_ids) for g in groups)} cases unsupported: this timm release '
            'cannot make the call their path needs, and every check that could run held.</p>\n'
            '<table><thead><tr><th>cases</th><th>paths</th><th>reason</th><th>which</th></tr></thead><tbody>\n'
            + '\n'.join(rows) + '\n</tbody></table>')


def _repro_cell(record: dict, run_dir: Path) -> str:
    if record['status'] not in REPRODUCIBLE:
        return ''
    return f'<code>{_esc(repro_command(run_dir, record["case_id"]))}</code>'


def _environment(frame: pd.DataFrame, run: RunRecord | None, results_path: Path) -> str:
    if run is not None:
        items = [(f.name, getattr(run, f.name)) for f in dataclasses.fields(run)]
        source = f'run.json beside {results_path}'
    else:
        columns = [setting.name for setting in MEASUREMENT]
        items = [(c, ', '.join(dict.fromkeys(str(v) for v in frame[c].dropna()))) for c in columns if c in frame]
        source = f'the records of {results_path} (no run.json beside it)'
    rows = [f'<tr><th>{_esc(name)}</th><td>{_esc(_shown(value))}</td></tr>' for name, value in items
            if value not in ('', None, [], {})]
    return (f'<h2>Environment</h2>\n<p>From {_esc(source)}.</p>\n<table><tbody>\n' + '\n'.join(rows)
            + '\n</tbody></table>')


# --- plots ---------------------------------------------------------------------------------------------------

def _variants(frame: pd.DataFrame) -> Iterable[tuple[tuple[str, int | None, str | None], pd.DataFrame]]:
    """The records grouped by model, patch size and window, in report order."""
    positions: dict[tuple[str, int | None, str | None], list[int]] = {}
    for position, r in enumerate(frame.to_dict('records')):
        key = (str(r['model']), int(r['patch_size']) if pd.notna(r['patch_size']) else None, _window(r['window_size']))
        positions.setdefault(key, []).append(position)
    for key, rows in positions.items():
        yield key, frame.iloc[rows]


def _variant_name(model: str, patch: Any, window: Any) -> str:
    return model + (f', patch {patch}' if patch is not None else '') + (f', window {window}' if window else '')


def _window(window: Any) -> str | None:
    if window is None or (not isinstance(window, list) and pd.isna(window)):
        return None
    return 'x'.join(map(str, window)) if isinstance(window, list) else str(int(window))


def _size_label(size: Any) -> str:
    return 'x'.join(map(str, size)) if isinstance(size, list) else str(size)


def _sizes(rows: pd.DataFrame) -> list[str]:
    """The variant's input sizes, smallest image first."""
    sizes = {_size_label(s): s for s in rows['img_size'] if isinstance(s, list)}
    return sorted(sizes, key=lambda label: (math.prod(sizes[label]), sizes[label]))


def _by_path(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    rows = rows.assign(size=rows['img_size'].map(_size_label))
    return sorted(rows.groupby('path'), key=lambda item: path_rank(item[0]))


def _throughput_chart(rows: pd.DataFrame):
    sizes = _sizes(rows)
    chart = _chart('Line', 'throughput', 'images/s', sizes, [PATH_COLOURS.get(p, '#777') for p, _ in _by_path(rows)],
                   include_x_axis=True)
    for path, by_path in _by_path(rows):
        timed = by_path.dropna(subset=['images_per_s']).groupby('size')
        median = timed['images_per_s'].median().reindex(sizes)
        stable = timed['timing_stable'].agg(lambda v: not v.eq(False).any()).reindex(sizes)
        chart.add(path, [None if pd.isna(value) else {'value': float(value), 'node': {'r': 4},
                                                      **({} if steady is not False else {'style': 'fill: white'})}
                         for value, steady in zip(median, stable)])
    return chart


def _drift_chart(rows: pd.DataFrame):
    sizes = _sizes(rows)
    series = [(f'{origin} · {path}', PATH_COLOURS.get(path, '#777'), by_origin)
              for path, by_path in _by_path(rows)
              for origin, by_origin in by_path.dropna(subset=['drift_cosine']).groupby('origin')]
    chart = _chart('Line', 'drift', 'cosine to native', sizes, [colour for _, colour, _ in series])
    for dashes, (title, _, by_origin) in enumerate(series):
        cosine = by_origin.groupby('size')['drift_cosine'].median().reindex(sizes)
        chart.add(title, [None if pd.isna(v) else float(v) for v in cosine],
                  stroke_style={'dasharray': ('', '6,3', '2,3', '8,3,2,3')[dashes % 4]})
    return chart


def _distribution_chart(rows: pd.DataFrame):
    records = sorted(rows.to_dict('records'), key=lambda r: (
        pd.notna(r['patch_size']) and r['patch_size'], math.prod(r['img_size']), r['img_size'],
        path_rank(r['path']), str(r['origin'])))
    labels = [f'{_size_label(r["img_size"])} {r["path"]} {r["origin"]}'
              + (f' p{int(r["patch_size"])}' if pd.notna(r['patch_size']) else '')
              + (f' w{_window(r["window_size"])}' if _window(r['window_size']) else '')
              + (' (not stable)' if r['timing_stable'] is False else '') for r in records]
    samples = [r['time_samples_ms'] for r in records]
    low, high = min(min(s) for s in samples), max(max(s) for s in samples)
    chart = _chart('Box', None, 'ms per pass', None, ['#1f77b4'], width=max(480, 44 * len(records) + 240),
                   height=320 + 5 * max(map(len, labels)), box_mode='tukey', show_legend=False,
                   x_label_rotation=50, truncate_label=-1, logarithmic=low > 0 and high / low > 20)
    chart.x_labels = labels
    for label, values in zip(labels, samples):
        chart.add(label, values)
    return chart


def _chart(kind: str, title: str | None, y_title: str, x_labels: list[str] | None, colours: list[str],
           width: int = 600, height: int = 340, **config: Any):
    import pygal
    from pygal.style import Style
    style = Style(background='white', plot_background='white', foreground='#333', foreground_strong='#222',
                  foreground_subtle='#999', font_family='system-ui, sans-serif', label_font_size=11,
                  major_label_font_size=11, title_font_size=14, legend_font_size=11, value_font_size=10,
                  guide_stroke_color='#e4e4e4', major_guide_stroke_color='#e4e4e4', guide_stroke_dasharray='0',
                  major_guide_stroke_dasharray='0', colors=tuple(colours), opacity='.9', transition='0ms')
    chart = getattr(pygal, kind)(style=style, js=[], disable_xml_declaration=True, width=width, height=height,
                                 explicit_size=True, title=title, y_title=y_title, show_x_guides=False,
                                 truncate_legend=-1, legend_box_size=10, **config)
    if x_labels is not None:
        chart.x_labels = x_labels
        chart.x_title = 'input size (H x W)'
    return chart


def _figure(charts: str, caption: str) -> str:
    return f'<figure class="wide">{charts}<figcaption>{_esc(caption)}</figcaption></figure>'


def _svg(chart, name: str) -> str:
    """The chart as an inline <svg> element, without pygal's comments and the configuration it writes for its
    tooltip script (which is not there), with ``name`` for pygal's random id (its CSS is scoped by it) and
    before every other id, so the same results give the same file and no two charts share an id."""
    svg = chart.render(is_unicode=True).replace(chart.uuid, name)
    svg = re.sub(r'<!--.*?-->|<script\b.*?</script>', '', svg, flags=re.S)
    return re.sub(rf'(\sid="|url\(#|href="#)(?!chart-{name}\b)', rf'\1{name}-', svg)


# --- text ----------------------------------------------------------------------------------------------------

def _esc(value: Any) -> str:
    return html.escape('' if value is None else str(value))


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ' '.join(map(str, value))
    if isinstance(value, dict):
        return ', '.join(f'{k}: {v}' for k, v in value.items())
    return str(value)
