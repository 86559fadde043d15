"""`harness` as a user runs it: a subprocess, exit codes, files on disk."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

REQUIRED_FIELDS = {'model', 'origin', 'img_size', 'patch_size', 'window_size', 'path', 'status', 'reason',
                   'timm_version', 'torch_version', 'device', 'parity_max_abs_diff', 'parity_cosine',
                   'drift_cosine', 'drift_top1_agreement', 'fidelity_weights_max_abs_diff',
                   'fidelity_outputs_max_abs_diff', 'time_median_ms', 'images_per_s', 'peak_memory_mb',
                   'missing_keys', 'unexpected_keys', 'load_error', 'shape_errors'}

TWO_ORIGINS = '''
name: cli
models: [{name: vit_small_patch14_dinov2, embed_dim: 64, depth: 2, num_heads: 2, img_size: 28}]
origins: [timm, dinov2]
sizes: [42]
paths: [create, set_input_size]
timing: {batch_size: 2, warmup: 0, budget_s: 0, min_repeats: 2}
'''


def harness(*args: str, cwd: Path | None = None, env_extra: dict[str, str] | None = None,
            timeout_s: float | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra} if env_extra else None
    return subprocess.run([sys.executable, '-m', 'harness.cli', *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout_s)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / 'results.jsonl').read_text().splitlines() if line.strip()]


def test_help_lists_every_command_and_option():
    top = harness('--help')
    assert top.returncode == 0
    for command in ('run', 'report', 'compare', 'ab', 'bisect', 'merge', 'coverage', 'repro', 'findings'):
        assert command in top.stdout and harness(command, '--help').returncode == 0
    run = harness('run', '--help')
    for option in ('--timm', '--device', '--out', '-k', '-n', '--resume', '--batch-size', '--dtype', '--no-timing',
                   '--shard', '--baseline', '--threads'):
        assert option in run.stdout
    assert 'exit codes' in harness('compare', '--help').stdout
    assert harness().returncode == 2


def test_invalid_matrix_exits_2_naming_file_and_entry(write_matrix, cache_dir):
    path = write_matrix('name: bad\nmodels: [vit_tiny_patch16_22]\norigins: [timm]\nsizes: [224]\n')
    done = harness('run', path, '--cache', cache_dir)
    assert done.returncode == 2
    assert str(path) in done.stderr and 'models[0]' in done.stderr and 'vit_tiny_patch16_224' in done.stderr
    assert 'Traceback' not in done.stderr


def test_run_writes_results_report_and_junit(write_matrix, tmp_path, cache_dir):
    out = tmp_path / 'out'
    done = harness('run', write_matrix(TWO_ORIGINS), '--out', out, '--cache', cache_dir, '-n', '2',
                   '--junitxml', tmp_path / 'junit.xml', '--threads', '2')
    assert done.returncode == 0, done.stdout[-3000:]
    results = records(out)
    assert len(results) == 4 and {r['status'] for r in results} == {'passed'}
    assert REQUIRED_FIELDS <= set(results[0])
    assert json.loads((out / 'run.json').read_text())['cpu_threads'] == 2   # the tests' own default is 1
    assert all(r['device_name'].endswith(', 2 threads') and r['cpu_cores'] >= 1 for r in results)
    assert all(isinstance(r['load_average_start'], float) and isinstance(r['load_average_end'], float)
               for r in results)
    assert {r['origin'] for r in results} == {'timm', 'dinov2'}
    assert all(r['img_size'] == [42, 42] and r['device'] == 'cpu' for r in results)
    report = (out / 'report.md').read_text()
    for fact in ('timm:', 'torch:', 'device:', 'dtype: fp32', 'batch size: 2'):
        assert fact in report
    assert (out / 'results.csv').exists() and (out / 'summary.csv').exists()
    assert 'vit_small_patch14_dinov2-dinov2-42x42-set_input_size' in (tmp_path / 'junit.xml').read_text()


def test_unexpected_failure_exits_1_and_keeps_other_results(write_matrix, tmp_path, cache_dir):
    """timm's .npz loader reads a rectangular source grid as square: create fails, the rest still run."""
    matrix = '''
name: rectangular-npz
models: [{name: vit_tiny_patch16_224, depth: 2, img_size: [32, 64]}]
origins: [timm, big_vision]
sizes: [64]
paths: [create, set_input_size]
'''
    out = tmp_path / 'out'
    done = harness('run', write_matrix(matrix), '--out', out, '--cache', cache_dir, '--no-timing')
    assert done.returncode == 1
    status = {(r['origin'], r['path']): r['status'] for r in records(out)}
    assert status == {('timm', 'create'): 'passed', ('timm', 'set_input_size'): 'passed',
                      ('big_vision', 'create'): 'failed', ('big_vision', 'set_input_size'): 'passed'}
    assert (out / 'report.md').exists()


def test_resume_runs_only_what_is_left(write_matrix, tmp_path, cache_dir):
    path, out = write_matrix(TWO_ORIGINS), tmp_path / 'out'
    first = harness('run', path, '--out', out, '--cache', cache_dir, '--no-timing', '-k', 'create')
    assert first.returncode == 0 and len(records(out)) == 2
    with open(out / 'results.jsonl', 'a') as f:
        f.write('{"case_id": "cut short by a cra')   # a crash mid-line loses nothing else
    resumed = harness('run', path, '--out', out, '--cache', cache_dir, '--no-timing', '--resume')
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert '2 passed' in resumed.stdout and len(records(out)) == 4   # only the two cases left ran
    ids = [json.loads(line)['case_id'] for line in (out / 'results.jsonl').read_text().splitlines()[:2]]
    assert all('create' in i for i in ids)
    again = harness('run', path, '--out', out, '--cache', cache_dir, '--no-timing', '--resume')
    assert again.returncode == 0 and 'nothing left to run' in again.stdout


def test_no_matching_case_is_a_usage_error(write_matrix, tmp_path, cache_dir):
    done = harness('run', write_matrix(TWO_ORIGINS), '--out', tmp_path, '--cache', cache_dir, '-k', 'nonesuch')
    assert done.returncode == 2 and 'no case' in done.stderr


def test_report_command(tmp_path):
    assert harness('report', tmp_path / 'missing.jsonl').returncode == 2
    results = tmp_path / 'results.jsonl'
    results.write_text(json.dumps({'case_id': 'a', 'matrix': 'm', 'model': 'vit', 'origin': 'timm',
                                   'img_size': [224, 224], 'patch_size': None, 'window_size': None,
                                   'path': 'create', 'status': 'passed'}) + '\n')
    done = harness('report', results, '--out', tmp_path / 'r')
    assert done.returncode == 0 and (tmp_path / 'r' / 'report.md').exists()


@pytest.mark.slow
def test_smoke_matrix_passes_end_to_end(tmp_path, cache_dir):
    from tests.test_report_html import remote_references
    done = harness('run', REPO / 'matrices' / 'smoke.yaml', '--out', tmp_path, '--cache', cache_dir, '-n', '2',
                   '--harness-progress-interval', '0')
    assert done.returncode == 0, done.stdout[-5000:]
    assert {r['status'] for r in records(tmp_path)} <= {'passed', 'xfailed', 'unsupported'}
    assert re.search(r'^progress: \d+/84 cases, \S+ elapsed, about \S+ left$', done.stdout, re.M)
    html = (tmp_path / 'report.html').read_text()
    assert html.count('<svg') == 2 * 8 + 4 and remote_references(html) == []   # 8 variants' plots, 4 models'


def test_timm_from_a_source_tree_is_installed_by_content(write_matrix, tmp_path):
    """`--timm .` in a timm checkout (as `git bisect run` uses it): a changed tree is a new install."""
    import shutil

    import timm
    tree = tmp_path / 'checkout'
    shutil.copytree(Path(timm.__file__).parent, tree / 'timm', ignore=shutil.ignore_patterns('__pycache__'))
    matrix = write_matrix('name: tree\nmodels: [{name: vit_tiny_patch16_224, depth: 1, img_size: 32}]\n'
                          'origins: [timm]\nsizes: [48]\npaths: [create]\n')
    cache = tmp_path / 'cache'
    first = harness('run', matrix, '--timm', '.', '--out', tmp_path / 'first', '--cache', cache, '--no-timing',
                    cwd=tree)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert [r['timm_version'] for r in records(tmp_path / 'first')] == [timm.__version__]
    (tree / 'timm' / '__init__.py').write_text((tree / 'timm' / '__init__.py').read_text() + '\n# changed\n')
    second = harness('run', matrix, '--timm', str(tree), '--out', tmp_path / 'second', '--cache', cache,
                     '--no-timing')
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    installs = sorted(p.name for p in (cache / 'timm').iterdir())
    assert len(installs) == 2 and all(name.startswith('local-') for name in installs)


@pytest.mark.parametrize('flag, value, expected', [
    ('batch-size', '0', "expected an int >= 1, got '0'"),
    ('threads', '-1', "expected an int >= 1, got '-1'"),
    ('max-cv', '0', "expected a fraction > 0, got '0'"),
    ('case-timeout', 'nan', "expected seconds >= 0 (0 = no limit), got 'nan'"),
])
def test_the_plugin_refuses_what_the_command_refuses(flag, value, expected, tmp_path):
    """`pytest -p harness.plugin --harness-X` and `harness run --X` share their types and bounds
    (harness.option_types): a batch size of 0 once ran through the plugin and recorded 0 images/s."""
    matrix = tmp_path / 'm.yaml'
    matrix.write_text('name: m\nmodels: [vit_tiny_patch16_224]\n')
    plugin = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'harness.plugin', '-p', 'no:cacheprovider',
                             f'--harness-{flag}', value, str(matrix), '--harness-out', str(tmp_path / 'out')],
                            capture_output=True, text=True, cwd=tmp_path)
    assert plugin.returncode == 4 and f'argument --harness-{flag}: {expected}' in plugin.stderr, plugin.stderr
    command = harness('run', matrix, f'--{flag}', value)
    assert command.returncode == 2 and f'--{flag}: {expected}' in command.stderr, command.stderr
