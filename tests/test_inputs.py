"""The front door of `harness run`: bad input, run.json, re-runs and --resume, Ctrl-C and kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO
from tests.test_cli import harness, records

TINY = '''
name: inputs
models: [{name: vit_small_patch14_dinov2, embed_dim: 64, depth: 2, num_heads: 2, img_size: 28}]
origins: [timm, dinov2]
sizes: [42, 56]
paths: [create, set_input_size]
'''
# fields that measure time or the moment a case ran: they differ between any two runs
TIMING_PREFIXES = ('time_', 'timing_')
TIMING_FIELDS = {'images_per_s', 'peak_memory_mb', 'duration_s', 'finished_at'}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single `error: ...` line that every bad input must get, with exit code 2 and no traceback."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: '), done.stderr
    return lines[0]


# --- bad input, each answered before timm is imported -------------------------------------------------------

@pytest.mark.parametrize('text, expected', [
    ('name: a\nmodels: [x]\nname: b\n', "line 3, column 1: duplicate key 'name' (first at line 1)"),
    ('name: a\nmodels:\n  - {name: x, depth: 2, depth: 4}\n', "line 3, column 25: duplicate key 'depth'"),
    ('name: a\ntiming:\n  dtype: fp32\n  batch_size: 2\n  dtype: bf16\n', "line 5, column 3: duplicate key 'dtype'"),
    ('name: a\nmodels: [x,\n', 'not valid YAML at line 3'),
    ('name: ../../x\nmodels: [x]\n', "name: expected a plain folder name"),
    ('name: sub/x\nmodels: [x]\n', "got 'sub/x'"),
    ('name: .hidden\nmodels: [x]\n', "got '.hidden'"),
    ('- a\n- b\n', 'expected a mapping at the top level, got list'),
])
def test_bad_matrix_text_is_one_line_naming_file(write_matrix, tmp_path, text, expected):
    path = write_matrix(text)
    line = one_error_line(harness('run', path, cwd=tmp_path))
    assert line.startswith(f'error: {path}: ') and expected in line
    assert '<unicode string>' not in line
    assert not (tmp_path / 'reports').exists() and not (tmp_path.parent / 'x').exists()


def test_matrix_that_is_a_directory_or_binary_or_missing(tmp_path):
    binary = tmp_path / 'matrix.yaml'
    binary.write_bytes(bytes(range(128, 256)) * 4)
    for path, expected in ((tmp_path, 'is a directory; expected a YAML matrix file'),
                           (binary, 'not UTF-8 text (byte 0x80 at offset 0); expected a YAML matrix file'),
                           (tmp_path / 'nowhere.yaml', 'file not found')):
        assert one_error_line(harness('run', path)).startswith(f'error: {path}: {expected}')


@pytest.mark.parametrize('flag, value, expected', [
    ('--timm', '', '--timm: expected a timm release such as 0.9.16, got an empty string'),
    ('--timm', 'no/such/timm', "--timm: 'no/such/timm' is neither a release (such as 0.9.16) nor an existing path"),
    ('--timm', '{tmp}', "--timm: '{tmp}' is neither a timm wheel (.whl) nor a timm source tree"),
    ('--batch-size', '0', "--batch-size: expected an int >= 1, got '0'"),
    ('--batch-size', '-1', "--batch-size: expected an int >= 1, got '-1'"),
    ('--batch-size', 'eight', "--batch-size: expected an int >= 1, got 'eight'"),
])
def test_bad_flag_is_one_line_naming_flag(write_matrix, tmp_path, flag, value, expected):
    line = one_error_line(harness('run', write_matrix(TINY), flag, value.format(tmp=tmp_path)))
    assert line.startswith(f'error: {expected.format(tmp=tmp_path)}')


def test_output_folder_that_cannot_be_written(write_matrix, tmp_path):
    a_file = tmp_path / 'a-file'
    a_file.write_text('not a folder')
    line = one_error_line(harness('run', write_matrix(TINY), '--out', a_file / 'sub'))
    assert line.startswith(f'error: --out: cannot create or write the folder {a_file / "sub"}')
    line = one_error_line(harness('run', write_matrix(TINY), '--out', a_file))
    assert line == f'error: --out: {a_file} is a file; expected a folder for the results and the report'


def test_bad_input_is_answered_before_importing_timm_or_torch(write_matrix, tmp_path):
    """Importing timm takes seconds: a typo must not wait for it."""
    bad = [['run', str(tmp_path / 'nowhere.yaml')], ['run', str(write_matrix('name: a\nname: b\n', 'dup.yaml'))],
           ['run', str(write_matrix(TINY)), '--out', str(write_matrix('', 'file'))],
           ['run', str(write_matrix(TINY.replace('origins: [timm, dinov2]\n', ''), 'no-origins.yaml'))],
           ['report', str(write_matrix('{"case_id": "a"}\ngarbage\n{"case_id": "b"}\n', 'results.jsonl'))]]
    script = ('import json, sys; from harness.cli import main\n'
              'for argv in json.loads(sys.argv[1]):\n'
              '    assert main(argv) == 2\n'
              'print(sorted({"timm", "torch"} & set(sys.modules)))')
    done = subprocess.run([sys.executable, '-c', script, json.dumps(bad)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[]'
    assert len(done.stderr.strip().splitlines()) == len(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without a GPU')
def test_cuda_without_a_gpu_is_a_usage_error(write_matrix, tmp_path):
    out = tmp_path / 'out'
    done = harness('run', write_matrix(TINY), '--out', out, '--device', 'cuda')
    line = one_error_line(done)
    assert done.stdout == ''   # answered before pytest starts (harness.runtime.preflight)
    assert line.startswith('error: --device cuda: ') and 'expected --device cpu' in line
    assert not (out / 'results.jsonl').exists()


@pytest.mark.parametrize('matrix, option', [(TINY.replace('origins: [timm, dinov2]\n', ''), []),
                                            (TINY, ['-k', 'no_such_case'])], ids=['no-origins', 'k-matches-none'])
def test_matrix_and_selection_answered_before_pytest_starts(write_matrix, tmp_path, matrix, option):
    """harness.runtime.preflight: no worker starts, so no pytest banner and no "no tests ran"."""
    done = harness('run', write_matrix(matrix), '--out', tmp_path / 'out', *option)
    line = one_error_line(done)
    assert done.stdout == ''
    assert 'origins: missing; expected a list' in line if not option else "matched -k 'no_such_case'" in line


# --- results files ------------------------------------------------------------------------------------------

def record(case_id: str) -> str:
    return json.dumps({'case_id': case_id, 'matrix': 'inputs', 'model': 'vit', 'origin': 'timm',
                       'img_size': [42, 42], 'patch_size': None, 'window_size': None, 'path': 'create',
                       'status': 'passed'})


def test_garbage_in_the_middle_of_results_is_refused_naming_file_and_line(write_matrix, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    results = out / 'results.jsonl'
    results.write_text(f'{record("a")}\n{{"case_id": "b", "sta\n{record("c")}\n')
    for command in (['report', results], ['run', write_matrix(TINY), '--out', out, '--resume']):
        line = one_error_line(harness(*command))
        assert line.startswith(f'error: {results}:2: not JSON')
    assert results.read_text().count('\n') == 3   # refused, not repaired


def test_last_line_cut_short_is_skipped_with_a_warning(tmp_path):
    results = tmp_path / 'results.jsonl'
    results.write_text(f'{record("a")}\n{record("b")}\n{{"case_id": "c", "sta')
    done = harness('report', results)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith('warning: ')]
    assert len(warnings) == 1 and warnings[0].startswith(f'warning: {results}:3: last line is not a whole record')
    assert (tmp_path / 'results.csv').read_text().count('inputs') == 2


# --- run.json, re-runs and --resume -------------------------------------------------------------------------

def test_run_json_rerun_and_resume(write_matrix, tmp_path, cache_dir):
    path, out = write_matrix(TINY), tmp_path / 'out'
    common = ['--out', out, '--cache', cache_dir, '--no-timing']
    first = harness('run', path, *common, '-k', 'timm and create and 42x42', '--batch-size', '3')
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    run = json.loads((out / 'run.json').read_text())
    assert run['timm_version'] == records(out)[0]['timm_version'] and run['torch_version'] == torch.__version__
    assert run['device'] == 'cpu' and run['device_name'] == records(out)[0]['device_name']
    assert (run['dtype'], run['batch_size'], run['timing_budget_s']) == ('fp32', 3, None)
    assert run['matrix_name'] == 'inputs' and len(run['matrix_sha256']) == 64 and run['harness_version']
    assert run['argv'][:3] == ['harness', 'run', str(path)] and run['started_at'].endswith('+00:00')

    # --resume refuses a folder recorded with another timm (as resuming with --timm 1.0.11 would be)
    run['timm_version'] = '1.0.11'
    (out / 'run.json').write_text(json.dumps(run))
    refused = harness('run', path, *common, '--batch-size', '3', '--resume')
    line = one_error_line(refused)
    assert line.startswith(f'error: {out / "run.json"}: cannot --resume a different run: timm was 1.0.11, now ')
    assert 'batch size' not in line and len(records(out)) == 1

    # a plain re-run moves the old results aside, named by the old run.json's start time, and starts clean
    started = run['started_at'].replace('-', '').replace(':', '').replace('+0000', 'Z')
    again = harness('run', path, *common, '-k', 'create')
    assert again.returncode == 0, again.stdout[-3000:]
    assert len(records(out)) == 4 and len((out / f'results.{started}.jsonl').read_text().splitlines()) == 1
    assert json.loads((out / 'run.json').read_text())['batch_size'] == 1   # the CPU default: no --batch-size

    # a folder from an older harness (no run.json) still resumes, with a warning
    (out / 'run.json').unlink()
    resumed = harness('run', path, *common, '--resume')
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f'warning: {out}: no run.json' in resumed.stderr
    assert sorted(r['path'] for r in records(out)) == ['create'] * 4 + ['set_input_size'] * 4
    assert (out / 'run.json').exists()


# --- interruptions ------------------------------------------------------------------------------------------

HOLD_LATER_CASES = ('-p', 'tests.hold_cases_after_first')   # the signal lands while cases are left


def start(*args) -> subprocess.Popen:
    """`harness` in a process group of its own, as a shell runs a command: signals can go to the whole group."""
    env = {**os.environ, 'PYTHONPATH': str(REPO)}   # the workers import tests.hold_cases_after_first
    return subprocess.Popen([sys.executable, '-m', 'harness.cli', *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


def wait_for_first_record(process: subprocess.Popen, out: Path, timeout_s: float = 300) -> None:
    results = out / 'results.jsonl'
    deadline = time.monotonic() + timeout_s
    while not (results.exists() and b'\n' in results.read_bytes()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, 'no case finished in time'
        time.sleep(0.05)


def test_ctrl_c_keeps_results_writes_report_and_says_how_to_resume(write_matrix, tmp_path, cache_dir):
    out = tmp_path / 'out'
    command = ['run', write_matrix(TINY), '--out', out, '--cache', cache_dir, '--no-timing']
    process = start(*command, *HOLD_LATER_CASES)
    wait_for_first_record(process, out)
    os.killpg(process.pid, signal.SIGINT)   # Ctrl-C in a terminal signals the whole foreground group
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stdout[-3000:] + stderr[-3000:]
    kept = records(out)
    assert len(kept) == 1 and (out / 'report.md').exists()
    hint = stderr.strip().splitlines()[-1]
    assert hint.startswith('interrupted: 1 finished case kept')
    assert f' kept in {out / "results.jsonl"}; to finish the run: harness run ' in hint
    assert hint.endswith(' --no-timing -p tests.hold_cases_after_first --resume')
    finish = harness(*command, '--resume')
    assert finish.returncode == 0, finish.stdout[-3000:]
    assert len(records(out)) == 8


def comparable(record: dict) -> dict:
    """A record without the fields that measure time or when it ran."""
    return {k: v for k, v in record.items() if not k.startswith(TIMING_PREFIXES) and k not in TIMING_FIELDS}


def test_kill_9_then_resume_equals_an_uninterrupted_run(write_matrix, tmp_path, cache_dir):
    path, killed, whole = write_matrix(TINY), tmp_path / 'killed', tmp_path / 'whole'
    process = start('run', path, '--out', killed, '--cache', cache_dir, '--no-timing', *HOLD_LATER_CASES)
    wait_for_first_record(process, killed)
    os.killpg(process.pid, signal.SIGKILL)   # the controller and its workers, with no chance to clean up
    process.communicate()
    assert len(records(killed)) == 1
    resumed = harness('run', path, '--out', killed, '--cache', cache_dir, '--no-timing', '--resume')
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    uninterrupted = harness('run', path, '--out', whole, '--cache', cache_dir, '--no-timing')
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:]
    after_kill = {r['case_id']: comparable(r) for r in records(killed)}
    assert all(r['fidelity_weights_max_abs_diff'] is not None and r['drift_cosine'] is not None
               for r in after_kill.values())   # the figures compared below are there
    assert len(after_kill) == len(records(killed)) == 8   # no case recorded twice
    assert after_kill == {r['case_id']: comparable(r) for r in records(whole)}
