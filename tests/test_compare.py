"""`harness compare`: status changes, output changes and timing changes between two runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.analysis.compare import (
    CompareSpec,
    Side,
    compare,
    compare_case,
    exit_code,
    round_ratios,
    status_change,
    timing_change,
)
from harness.results import append_result
from harness.store.case_result import CaseResult
from harness.store.run_record import RunRecord, write_run_record
from tests.test_cli import TWO_ORIGINS, harness

SPEC = CompareSpec()
KEY = ('m', 'vit-timm-224x224-create')


def record(status: str = 'passed', **fields) -> dict:
    return {'matrix': 'm', 'case_id': KEY[1], 'status': status, 'reason': '', 'device': 'cpu',
            'device_name': 'Test CPU, 2 threads', 'dtype': 'fp32', 'batch_size': 1, 'torch_version': '2.14.1',
            **fields}


# --- status ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('was, now, change', [
    ('passed', 'failed', 'regressed'),
    ('xfailed', 'xpassed', 'regressed'),
    ('unsupported', 'failed', 'regressed'),
    ('passed', 'unsupported', 'regressed'),      # a path that stopped being supported
    ('failed', 'passed', 'fixed'),
    ('xpassed', 'xfailed', 'fixed'),
    ('failed', 'unsupported', 'fixed'),
    ('unsupported', 'passed', 'unchanged'),
    ('passed', 'xfailed', 'unchanged'),
    ('failed', 'xpassed', 'unchanged'),
    ('error', 'passed', 'not_comparable'),
    ('passed', 'resource', 'not_comparable'),
])
def test_status_changes(was, now, change):
    assert status_change(record(was), record(now), SPEC)[0] == change


def test_new_and_removed_cases():
    assert status_change(None, record(), SPEC)[0] == 'new'
    assert status_change(record(), None, SPEC)[0] == 'removed'


def test_a_regression_says_why_the_case_now_fails():
    change, detail = status_change(record('passed'), record('failed', reason='fidelity: 0.3 > 1e-4'), SPEC)
    assert change == 'regressed' and detail == 'passed -> failed: fidelity: 0.3 > 1e-4'


# --- outputs --------------------------------------------------------------------------------------------------

def fingerprint(digest: str = 'abc', head_shift: float = 0.0) -> dict:
    return {'digest': digest, 'logits_head': [[0.5 + head_shift, -1.0], [0.25, 2.0]], 'logits_mean': 0.1,
            'logits_std': 1.2, 'pre_logits_mean': 0.0, 'pre_logits_std': 1.0}


def test_outputs_that_moved_beyond_atol_are_an_outputs_change_even_when_every_check_passes():
    change, detail = status_change(record(output_fingerprint=fingerprint('a')),
                                   record(output_fingerprint=fingerprint('b', head_shift=1e-3)), SPEC)
    assert change == 'outputs_changed' and 'logits_head' in detail


def test_outputs_within_atol_are_unchanged_even_when_the_digest_differs():
    """A change far below the rounding of the digest can still flip it: the figures decide."""
    base, new = record(output_fingerprint=fingerprint('a')), record(output_fingerprint=fingerprint('b', 1e-8))
    assert status_change(base, new, SPEC)[0] == 'unchanged'


def test_fingerprints_of_different_devices_are_not_compared():
    base = record(output_fingerprint=fingerprint('a'))
    new = record(output_fingerprint=fingerprint('b', head_shift=1.0), device='cuda')
    assert status_change(base, new, SPEC)[0] == 'unchanged'


@pytest.mark.parametrize('figure, old, new, change', [
    ('parity_max_abs_diff', 1e-6, 2e-4, 'outputs_changed'),
    ('parity_max_abs_diff', 1e-6, 2e-6, 'unchanged'),
    ('fidelity_weights_max_abs_diff', None, 0.0, 'outputs_changed'),   # a figure that appeared
    ('drift_cosine', float('nan'), 0.9, 'outputs_changed'),
])
def test_check_figures_that_moved(figure, old, new, change):
    assert status_change(record(**{figure: old}), record(**{figure: new}), SPEC)[0] == change


# --- timing ---------------------------------------------------------------------------------------------------

def samples(median_ms: float, n: int = 15, spread: float = 0.02, seed: int = 0) -> list[float]:
    """Timed passes as a quiet CPU gives them: a few percent of noise around the median."""
    rng = np.random.default_rng(seed)
    return list(median_ms * (1 + spread * rng.standard_normal(n)))


def test_a_15_percent_slowdown_is_slower():
    change, ratio, p_value, _ = timing_change(record(time_samples_ms=samples(100.0)),
                                              record(time_samples_ms=samples(115.0, seed=1)), SPEC)
    assert change == 'slower' and ratio == pytest.approx(1.15, abs=0.03) and p_value < SPEC.alpha


def test_a_15_percent_speedup_is_faster():
    assert timing_change(record(time_samples_ms=samples(115.0)), record(time_samples_ms=samples(100.0, seed=1)),
                         SPEC)[0] == 'faster'


def test_a_2_percent_slowdown_is_not_flagged_though_significant():
    change, ratio, p_value, _ = timing_change(record(time_samples_ms=samples(100.0, n=40, spread=0.005)),
                                              record(time_samples_ms=samples(102.0, n=40, spread=0.005, seed=1)),
                                              SPEC)
    assert change == 'same' and p_value < SPEC.alpha and ratio < SPEC.factor


def test_a_large_ratio_that_is_not_significant_is_noisy():
    base = record(time_samples_ms=[100.0, 180.0, 105.0, 170.0, 98.0, 160.0, 110.0])
    new = record(time_samples_ms=[120.0, 175.0, 130.0, 190.0, 101.0, 185.0, 125.0])
    change, ratio, p_value, _ = timing_change(base, new, SPEC)
    assert change == 'noisy' and ratio > SPEC.factor and p_value >= SPEC.alpha


def in_rounds(medians_ms: list[float], seed: int) -> dict:
    """A record timed in rounds as `harness ab` times it: six passes per round around each round's median."""
    timed = [samples(ms, n=6, seed=seed + i) for i, ms in enumerate(medians_ms)]
    return record(time_samples_ms=[ms for passes in timed for ms in passes],
                  time_sample_rounds=[i + 1 for i, passes in enumerate(timed) for _ in passes])


def test_a_slowdown_every_round_shows_is_slower():
    change, ratio, _, why = timing_change(in_rounds([100.0] * 5, seed=0), in_rounds([115.0] * 5, seed=10), SPEC)
    assert change == 'slower' and ratio == pytest.approx(1.15, abs=0.03) and why == ''


def test_a_slowdown_only_some_rounds_show_is_noisy():
    """Machine noise that hit the new side in four rounds of five: significant over all samples, beyond the
    factor, but one round says the new release is faster."""
    base, new = in_rounds([100.0] * 5, seed=0), in_rounds([95.0, 130.0, 130.0, 130.0, 130.0], seed=10)
    change, ratio, p_value, why = timing_change(base, new, SPEC)
    assert ratio > SPEC.factor and p_value < SPEC.alpha
    assert change == 'noisy' and why.startswith('timing rounds disagree: ratios 0.9')


def test_rounds_of_one_run_each_are_not_screened():
    """A case timed in one go has one round: the rank test and the factor decide alone."""
    assert round_ratios(([1.0, 2.0], [1, 1]), ([3.0, 4.0], [1, 1])) == [pytest.approx(2.33, abs=0.01)]
    assert round_ratios(([1.0], None), ([2.0], None)) == []



@pytest.mark.parametrize('setting, value', [('device_name', 'Other CPU'), ('dtype', 'bf16'), ('batch_size', 8),
                                            ('torch_version', '2.13.0')])
def test_timings_measured_differently_are_not_comparable(setting, value):
    change, _, _, why = timing_change(record(time_samples_ms=samples(100.0)),
                                      record(time_samples_ms=samples(150.0), **{setting: value}), SPEC)
    assert change == 'not_comparable' and setting in why


def test_timings_of_a_run_without_run_json_are_not_comparable():
    comparison = compare_case(KEY, record(time_samples_ms=samples(100.0)), record(time_samples_ms=samples(150.0)),
                              'a run without run.json', SPEC)
    assert comparison.timing_change == 'not_comparable' and comparison.change == 'unchanged'


def test_runs_with_different_tf32_settings_are_not_timed_comparably():
    base = Side('base', RunRecord(math_flags={'matmul_allow_tf32': False}), {KEY: record(time_samples_ms=[1.0] * 7)})
    new = Side('new', RunRecord(math_flags={'matmul_allow_tf32': True}), {KEY: record(time_samples_ms=[2.0] * 7)})
    (comparison,) = compare(base, new, SPEC)
    assert comparison.timing_change == 'not_comparable' and 'math settings differ' in comparison.detail


# --- exit code ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('was, now, base_ms, new_ms, code', [
    ('passed', 'passed', 100.0, 101.0, 0),
    ('failed', 'passed', 100.0, 101.0, 0),          # fixed
    ('passed', 'failed', 100.0, 101.0, 1),          # regressed
    ('passed', 'passed', 100.0, 130.0, 1),          # slower
    ('passed', 'error', 100.0, 101.0, 1),           # a new error is not comparable, but it is not fine
    ('error', 'error', 100.0, 101.0, 0),
])
def test_exit_code(was, now, base_ms, new_ms, code):
    base = Side('base', RunRecord(), {KEY: record(was, time_samples_ms=samples(base_ms))})
    new = Side('new', RunRecord(), {KEY: record(now, time_samples_ms=samples(new_ms, seed=1))})
    assert exit_code(compare(base, new, SPEC)) == code


# --- the command ----------------------------------------------------------------------------------------------

FINISHED_AT = '2026-12-07T08:00:00+00:00'   # compare takes finished runs only


def write_run(folder, statuses: dict[str, str], timm_version: str, **run_fields) -> None:
    """A finished run's folder holding a record of each case (``run_fields``: more of its run.json)."""
    folder.mkdir()
    write_run_record(folder, RunRecord(**{'results_schema': 2, 'timm_version': timm_version, 'device': 'cpu',
                                          'device_name': 'Test CPU, 2 threads', 'finished_at': FINISHED_AT,
                                          **run_fields}))
    for case_id, status in statuses.items():
        append_result(folder, CaseResult(case_id=case_id, matrix='m', model='vit', origin='timm', img_size=[64, 64],
                                         patch_size=None, window_size=None, path=case_id.rsplit('-', 1)[1],
                                         status=status, device='cpu', device_name='Test CPU, 2 threads',
                                         dtype='fp32', batch_size=1, timm_version=timm_version, family='vit',
                                         failed_checks=['parity'] if status == 'failed' else []))


def test_compare_command_writes_tables_and_step_summary(tmp_path, monkeypatch):
    old, new = tmp_path / 'old', tmp_path / 'new'
    write_run(old, {'vit-create': 'failed', 'vit-dynamic': 'passed', 'vit-set_input_size': 'passed'}, '1.0.30')
    write_run(new, {'vit-create': 'passed', 'vit-dynamic': 'failed', 'vit-extra': 'passed'}, '1.0.31')
    summary = tmp_path / 'step-summary.md'
    summary.write_text('earlier step\n')
    done = harness('compare', old, new / 'results.jsonl', '--out', tmp_path / 'cmp',
                   env_extra={'GITHUB_STEP_SUMMARY': str(summary)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'compare: 4 cases: 1 regressed, 1 fixed, 1 new, 1 removed' in done.stdout
    cases = {c['case_id']: c for c in json.loads((tmp_path / 'cmp' / 'compare.json').read_text())['cases']}
    assert {k: c['change'] for k, c in cases.items()} == {
        'vit-create': 'fixed', 'vit-dynamic': 'regressed', 'vit-set_input_size': 'removed', 'vit-extra': 'new'}
    markdown = (tmp_path / 'cmp' / 'compare.md').read_text()
    assert markdown.index('## Findings') < markdown.index('## Regressed') < markdown.index('## Fixed')
    assert '**1 finding from 1 failed case**' in markdown and '### vit: parity fails' in markdown
    assert '- id `' in markdown and 'first seen in timm 1.0.31' in markdown   # every case of it regressed there
    assert f'harness repro {new} vit-dynamic' in markdown
    assert '1.0.30' in markdown and '1.0.31' in markdown
    assert summary.read_text().startswith('earlier step\n# Compare')
    back = harness('compare', new, old, '--out', tmp_path / 'back')
    assert back.returncode == 1 and '1 regressed, 1 fixed' in back.stdout


@pytest.mark.parametrize('args, fragment', [
    (['missing-a', 'missing-b'], 'missing-a: no results.jsonl there'),
    (['.', '.', '--alpha', '2'], '--alpha: expected a probability'),
    (['.', '.', '--factor', '0.9'], '--factor: expected a ratio >= 1'),
    (['.', '.', '--outputs-atol', 'x'], '--outputs-atol: expected a tolerance'),
])
def test_compare_bad_input_is_one_line(tmp_path, args, fragment):
    done = harness('compare', *args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and fragment in done.stderr, done.stderr


def test_two_runs_of_one_release_compare_unchanged(write_matrix, tmp_path, cache_dir):
    """Same release, same machine: the outputs are bit-identical, so nothing may be reported as changed."""
    path = write_matrix(TWO_ORIGINS)
    for name in ('a', 'b'):
        done = harness('run', path, '--out', tmp_path / name, '--cache', cache_dir, '--no-timing')
        assert done.returncode == 0, done.stdout[-3000:]
    compared = harness('compare', tmp_path / 'a', tmp_path / 'b')
    assert compared.returncode == 0, compared.stdout + compared.stderr
    cases = json.loads((tmp_path / 'b' / 'compare.json').read_text())['cases']
    assert len(cases) == 4 and {c['change'] for c in cases} == {'unchanged'}
    assert '## Findings' not in (tmp_path / 'b' / 'compare.md').read_text()   # nothing failed: no findings
    fingerprints = [json.loads(line)['output_fingerprint'] for line in (tmp_path / 'a' / 'results.jsonl').open()]
    assert all(len(f['digest']) == 16 and len(f['logits_head'][0]) == 8 for f in fingerprints)


# --- sequential runs that moved together ----------------------------------------------------------------------

def _sides(ratio: float, rounds: list[int] | None, cases: int = 6) -> tuple[Side, Side]:
    rng = np.random.default_rng(0)
    base, new = {}, {}
    for i in range(cases):
        samples = list(10 + rng.normal(0, 0.05, 12))
        base[('m', f'c{i}')] = record(time_samples_ms=samples, time_sample_rounds=rounds)
        new[('m', f'c{i}')] = record(time_samples_ms=[s * ratio for s in samples], time_sample_rounds=rounds)
    run = RunRecord(timm_version='1.0.31', torch_version='2.14.1', harness_version='0', device='cpu')
    return Side('base', run, base), Side('new', run, new)


@pytest.mark.parametrize('ratio, rounds, warned', [
    (1.2, None, True), (0.8, [1] * 12, True),       # sequential, every case 20% apart: the machine or the release
    (1.2, [1, 2] * 6, False),                         # interleaved rounds: the drift cancels, no warning needed
    (1.02, None, False),                              # moved together, but within the 5% a quiet machine drifts
])
def test_sequential_runs_whose_cases_moved_together_are_warned_about(ratio, rounds, warned):
    from harness.analysis.compare import shared_shift
    from harness.analysis.compare_report import render_markdown, to_json
    base, new = _sides(ratio, rounds)
    comparisons = compare(base, new, SPEC)
    warning = shared_shift(base, new, comparisons)
    assert (warning is not None) == warned
    if warned:
        assert f'median ratio {ratio:.2f} over 6 cases' in warning and 'harness ab' in warning
        assert f'**Warning:** {warning}' in render_markdown(base, new, SPEC, comparisons)
        assert to_json(base, new, SPEC, comparisons)['warnings'] == [warning]
        assert {c.timing_change for c in comparisons} == {'slower' if ratio > 1 else 'faster'}   # verdicts stand
