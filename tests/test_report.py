"""write_report on a handful of hand-made records: header, totals, summary, failures, tables and CSVs."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from harness.analysis.report import write_report
from harness.results import RESULTS_FILE, append_result
from harness.store.case_result import HELD, CaseResult

MEASURED = dict(timm_version='1.0.9', torch_version='2.4.1+cpu', device='cpu', device_name='Test CPU',
                dtype='fp32', batch_size=4, timing_repeats=5, timing_budget_s=2.0)


def _case(model, origin, path, size=(224, 224), status='passed', **figures) -> CaseResult:
    case_id = f'{model}-{origin}-{size[0]}x{size[1]}-{path}'
    defaults = dict(finished_at='2025-01-02T10:00:00+00:00', drift_cosine=0.98765, drift_top1_agreement=1.0,
                    fidelity_weights_max_abs_diff=3.1e-07, fidelity_outputs_max_abs_diff=0.0,
                    parity_max_abs_diff=1.2e-06, parity_cosine=0.99999, time_median_ms=12.345,
                    time_iqr_ms=0.5, time_min_ms=12.0, images_per_s=324.0, peak_memory_mb=None)
    return CaseResult(case_id=case_id, matrix='smoke', model=model, origin=origin, img_size=list(size),
                      patch_size=16, window_size=None, path=path, status=status,
                      **MEASURED, **{**defaults, **figures})


CASES = [
    _case('vit_tiny', 'synthetic', 'create'),
    _case('vit_tiny', 'synthetic', 'set_input_size', size=(224, 320),
          parity_note='not judged: the create path fails fidelity (its own case reports it)'),
    _case('vit_tiny', 'synthetic', 'set_input_size'),
    _case('vit_tiny', 'synthetic', 'set_input_size', size=(256, 256), status='failed',
          failed_checks=['parity'], reason='parity max abs diff 0.5 > atol 0.001 | see logs ' + 'x' * 200,
          parity_max_abs_diff=0.5, finished_at='2025-01-03T09:30:00+00:00'),
    _case('vit_tiny', 'hub', 'dynamic', status='xfailed', reason='dynamic img size unsupported for hub weights',
          parity_note='documented difference: dynamic computes with windows [7x7] and shifts [3x3] (the source '
                      'configuration), create with [8x8] and [4x4]'),
    _case('vit_tiny', 'hub', 'create', status='error', reason='RuntimeError: boom',
          **{k: None for k in ('drift_cosine', 'drift_top1_agreement', 'fidelity_weights_max_abs_diff',
                               'fidelity_outputs_max_abs_diff', 'parity_max_abs_diff', 'parity_cosine',
                               'time_median_ms', 'time_iqr_ms', 'time_min_ms', 'images_per_s')}),
]


@pytest.fixture
def report(tmp_path):
    for case in CASES:
        append_result(tmp_path, case)
    files = write_report(tmp_path / RESULTS_FILE, tmp_path / 'report')
    return files, files.markdown.read_text()


def _section(markdown: str, title: str) -> str:
    match = re.search(rf'^## {re.escape(title)}.*?(?=^## |\Z)', markdown, re.S | re.M)
    assert match, f'no section {title!r} in:\n{markdown}'
    return match.group(0)


def _row(section: str, *cells: str) -> str:
    rows = [line for line in section.splitlines() if all(f'| {c} ' in line for c in cells)]
    assert len(rows) == 1, f'{cells} should match one row of:\n{section}'
    return rows[0]


def test_header_states_how_it_was_measured(report):
    _, md = report
    assert md.startswith('# Resize regression report: smoke\n')
    measured = _section(md, 'How this was measured')
    for line in ('- timm: 1.0.9', '- torch: 2.4.1+cpu', '- device: cpu (Test CPU)', '- dtype: fp32',
                 '- batch size: 4', '- timing budget (s per case): 2.0', '- newest record: 2025-01-03T09:30:00+00:00'):
        assert line in measured.splitlines()


def test_totals_count_every_status(report):
    _, md = report
    assert '**Totals:** 6 cases: 3 passed, 1 failed, 1 xfailed, 0 xpassed, 0 unsupported, 1 error' in md


def test_summary_cells_per_model_origin_path(report):
    _, md = report
    summary = _section(md, 'Summary')
    header = next(line for line in summary.splitlines() if line.startswith('| model'))
    assert re.findall(r'\w+', header) == ['model', 'origin', 'create', 'set_input_size', 'dynamic']
    assert re.split(r'\s*\|\s*', _row(summary, 'synthetic'))[1:-1] == [
        'vit_tiny', 'synthetic', '1 passed', '2 passed, 1 failed', '—']
    assert re.split(r'\s*\|\s*', _row(summary, 'hub'))[1:-1] == ['vit_tiny', 'hub', '1 error', '—', '1 xfailed']


def _item(section: str, case_id: str) -> str:
    """The list item of ``case_id``: its line and the indented reason lines below it."""
    match = re.search(rf'^- \*\*\w+\*\* `{re.escape(case_id)}`.*?(?=^- |^#|\Z)', section, re.S | re.M)
    assert match, f'no item for {case_id} in:\n{section}'
    return match.group(0)


def test_failures_list_unexpected_and_xfailed_with_whole_reasons(report):
    _, md = report
    failures = _section(md, 'Failures')
    failed = _item(failures, 'vit_tiny-synthetic-256x256-set_input_size')
    assert failed.startswith('- **failed** `vit_tiny-synthetic-256x256-set_input_size` (parity)\n')
    assert ' '.join(failed.split('\n', 1)[1].split()) == 'parity max abs diff 0.5 > atol 0.001 | see logs ' + 'x' * 200
    assert '- **error** `vit_tiny-hub-224x224-create`\n  RuntimeError: boom' in failures
    assert 'dynamic img size unsupported for hub weights' in _item(failures, 'vit_tiny-hub-224x224-dynamic')
    assert 'synthetic-224x224-create' not in failures


def test_prose_and_lists_fit_100_columns(report):
    """Every line outside the figure tables and the commands to copy fits 100 columns, unless one word (a path,
    which cannot be wrapped) makes it too long: without its longest word it would fit."""
    _, md = report
    prose = re.sub(r'^```.*?^```', '', md, flags=re.S | re.M)
    long = [line for line in prose.splitlines() if not line.startswith('|')
            and len(line) - len(max(line.split(), key=len, default='')) > 100]
    assert long == []
    assert any(len(line) > 100 for line in md.splitlines())   # the 200-x reason: one word, kept whole


def test_unsupported_reasons_grouped(tmp_path):
    """Cases unsupported for the same cause share a line, whatever checks each ran; the largest group first."""
    why = 'dynamic_img_size changes only the input size; this case also changes the patch or window size'
    cases = [_case('vit_tiny', 'synthetic', 'dynamic', size=size, status='unsupported',
                   reason=f'{why}{HELD}load (native size){", reload" * (size[0] == 64)}')
             for size in ((64, 64), (96, 96), (64, 128))]
    cases += [_case('swin_tiny', 'synthetic', path, status='unsupported', reason='SwinTransformer has no '
                    'set_input_size in this timm release') for path in ('set_input_size', 'dynamic')]
    for case in [*cases, CASES[0]]:
        append_result(tmp_path, case)
    md = write_report(tmp_path / RESULTS_FILE, tmp_path / 'report').markdown.read_text()
    section = _section(md, 'Unsupported')
    assert section.startswith('## Unsupported\n\n5 cases unsupported: ')
    items = re.findall(r'^- (.*(?:\n  .*)*)', section, re.M)
    assert [' '.join(item.split()) for item in items] == [
        f'{why} (3 cases; dynamic)',
        'SwinTransformer has no set_input_size in this timm release (2 cases; set_input_size, dynamic)']
    assert '## Unsupported' not in write_report(tmp_path / RESULTS_FILE, tmp_path / 'report').markdown.read_text() \
        .replace('## Unsupported', '', 1)


def test_no_failures_section_when_all_pass(tmp_path):
    append_result(tmp_path, CASES[0])
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    assert '## Failures' not in md and '1 passed' in md


def test_drift_table_formats_figures_and_nulls(report):
    _, md = report
    drift = _section(md, 'Drift and fidelity')
    rect = _row(drift, 'vit_tiny', '224x320', 'set_input_size')
    for cell in ('| 16 ', '| 0.9877 ', '| 1.0000 ', '| 3.1e-07 ', '| 0 ', '| 1.2e-06 '):
        assert cell in rect
    nulls = _row(drift, 'hub', 'create')
    assert nulls.count('| — ') == 8   # window_size, six null figures and no parity note
    assert 'parity not judged' in drift
    assert 'drift cosine (recorded)' in drift and 'is recorded, not judged' in ' '.join(drift.split())
    assert _row(drift, 'hub', 'dynamic').endswith('| documented difference          |')
    assert rect.endswith('| the create path fails fidelity |')


def test_timing_caption_says_cpu(report):
    _, md = report
    timing = _section(md, 'Timing')
    assert '**CPU timings**' in timing
    assert ('Device cpu (Test CPU); dtype fp32; batch size 4; budget 2.0 s per case for warm-up and timed passes '
            'together; median and IQR over 5 timed passes per case.') in ' '.join(timing.split())
    assert '| 12.35 ' in _row(timing, '224x320')
    assert 'hub-224x224-create' not in timing and '| hub ' in timing   # untimed error case left out


def test_disagreeing_versions_are_all_listed(tmp_path):
    append_result(tmp_path, CASES[0])
    append_result(tmp_path, CaseResult(**{**CASES[1].__dict__, 'timm_version': '0.9.16'}))
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    assert '- timm: 1.0.9 (1 case), 0.9.16 (1 case)' in md
    assert '| 0.9.16 ' in _row(_section(md, 'Drift and fidelity'), '224x320')   # per-row column appears


def test_csv_has_one_row_per_case_with_every_field(report):
    files, _ = report
    frame = pd.read_csv(files.csv)
    assert len(frame) == len(CASES)
    assert list(frame.columns)[:len(CaseResult.__dataclass_fields__)] == list(CaseResult.__dataclass_fields__)
    assert set(frame['case_id']) == {c.case_id for c in CASES}
    failed = frame.set_index('case_id').loc['vit_tiny-synthetic-256x256-set_input_size']
    assert json.loads(failed['img_size']) == [256, 256] and json.loads(failed['failed_checks']) == ['parity']
    assert failed['parity_max_abs_diff'] == 0.5 and failed['batch_size'] == 4
    summary = pd.read_csv(files.summary_csv)
    assert list(summary.columns) == ['model', 'origin', 'create', 'set_input_size', 'dynamic']


def test_truncated_last_line_and_missing_fields(tmp_path):
    append_result(tmp_path, CASES[0])
    old = json.loads(CASES[3].to_json())
    for key in ('parity_cosine', 'peak_memory_mb', 'timing_repeats', 'device_name', 'failed_checks'):
        del old[key]                                                        # an older record's schema
    results = tmp_path / RESULTS_FILE
    with open(results, 'a') as f:
        f.write(json.dumps(old) + '\n' + CASES[4].to_json()[:60])          # crash mid-line
    files = write_report(results, tmp_path / 'out')
    md = files.markdown.read_text()
    assert '**Totals:** 2 cases: 1 passed, 1 failed' in md
    assert 'hub' not in md
    assert len(pd.read_csv(files.csv)) == 2


def test_overwrites_existing_report(tmp_path, report):
    files, _ = report
    results = tmp_path / 'second' / RESULTS_FILE
    append_result(results.parent, CASES[0])
    again = write_report(results, files.markdown.parent)
    assert '1 case: 1 passed' in again.markdown.read_text()
    assert len(pd.read_csv(again.csv)) == 1


def test_windows_read_as_case_ids_spell_them(tmp_path):
    for window in (7, [8, 12], None):
        case = _case('swin_tiny', 'timm', 'create', size=(256, 384))
        case.window_size, case.patch_size = window, 4
        case.case_id += f'-{window}'
        append_result(tmp_path, case)
    drift = _section(write_report(tmp_path / RESULTS_FILE, tmp_path / 'report').markdown.read_text(),
                     'Drift and fidelity')
    rows = [line for line in drift.splitlines() if 'swin_tiny' in line]
    assert [line.split('|')[5].strip() for line in rows] == ['—', '7', '8x12']   # sorted by window, None first
