"""CI gates: `harness compare` and `harness merge` judge only the whole of a finished run, and every reader of
results refuses a record that no harness writes (an unknown status, a field of the wrong type), each with one
line `error: ...` and exit code 2."""
from __future__ import annotations

import json
import random

import pytest

from harness.analysis.compare import load_side
from harness.analysis.merge import MergeError, merge_runs
from harness.results import RESULTS_FILE, ResultsFileError, read_results, read_run_results
from harness.store.case_result import STATUSES
from harness.store.run_record import RunRecordError
from tests.test_cli import harness
from tests.test_compare import write_run
from tests.test_inputs import one_error_line

CASES = {'vit-create': 'passed', 'vit-dynamic': 'failed'}
SOUND = {'case_id': 'vit-create', 'matrix': 'm', 'model': 'vit', 'origin': 'timm', 'img_size': [64, 64],
         'patch_size': None, 'window_size': [7, 7], 'path': 'create', 'status': 'passed', 'duration_s': 1,
         'time_samples_ms': [1.5, 2], 'model_overrides': {'depth': 1}, 'some_later_field': 'kept'}


# --- compare: NEW must be the results of a finished run --------------------------------------------------------

@pytest.mark.parametrize('content, expected', [
    pytest.param(b'', 'holds no record', id='empty'),
    pytest.param(b'garbage', '1: not JSON', id='garbage'),
    pytest.param(random.Random(18).randbytes(4096).replace(b'\n', b''), '1: not JSON', id='random-bytes'),
    pytest.param(b'{"case_id": "vit-create", "matrix": "m", "sta', '1: not JSON', id='cut-short'),
])
def test_compare_refuses_new_results_that_hold_no_whole_run(content, expected, tmp_path):
    write_run(tmp_path / 'base', CASES, '1.0.30')
    write_run(tmp_path / 'new', {}, '1.0.31')
    (tmp_path / 'new' / RESULTS_FILE).write_bytes(content)
    line = one_error_line(harness('compare', tmp_path / 'base', tmp_path / 'new'))
    assert line.startswith(f'error: {tmp_path / "new" / RESULTS_FILE}') and expected in line, line
    assert not (tmp_path / 'new' / 'compare.md').exists()


def test_compare_refuses_a_run_that_did_not_finish_but_takes_an_empty_shard(tmp_path):
    write_run(tmp_path / 'killed', CASES, '1.0.31', finished_at='')
    with pytest.raises(RunRecordError, match='run.json: finished_at is empty: the run did not finish'):
        load_side(tmp_path / 'killed')
    write_run(tmp_path / 'whole', {}, '1.0.31')   # run.json alone: not a run
    with pytest.raises(ValueError, match='no results.jsonl there'):
        load_side(tmp_path / 'whole')
    write_run(tmp_path / 'shard', {}, '1.0.31', shard='3/3')   # a shard that held no case (harness ab --shard)
    assert load_side(tmp_path / 'shard').records == {}


# --- merge: every shard K of N, once, finished ---------------------------------------------------------------

def write_shards(tmp_path, *shards: str, **run_fields) -> list:
    folders = []
    for shard in shards:
        folders.append(tmp_path / f'shard-{shard.replace("/", "-of-")}-{len(folders)}')
        case = f'vit-{shard.split("/")[0]}-create'
        write_run(folders[-1], {case: 'passed'}, '1.0.31', shard=shard, **run_fields)
    return folders


def test_merge_refuses_a_missing_shard_naming_it(tmp_path):
    one_of_two = write_shards(tmp_path, '1/2')
    line = one_error_line(harness('merge', tmp_path / 'merged', *one_of_two))
    assert line == f'error: missing shard 2/2: got 1/2 ({one_of_two[0]}); expected all 2 shards of the run'
    assert not (tmp_path / 'merged' / RESULTS_FILE).exists() and not (tmp_path / 'merged' / 'run.json').exists()


@pytest.mark.parametrize('shards, run_fields, expected', [
    pytest.param(['1/4', '3/4'], {}, 'missing shards 2/4, 4/4: got 1/4 (', id='two-missing'),
    pytest.param(['1/2', '2/3'], {}, ': shard 2/3, but ', id='different-n'),
    pytest.param(['1/2', '1/2', '2/2'], {}, ': shard 1/2 is also in ', id='twice'),
    pytest.param(['1/1'], {'finished_at': ''}, 'run.json: finished_at is empty: the run did not finish',
                 id='unfinished'),
    pytest.param(['1/1'], {'shard': ''}, ': run.json has no shard; expected', id='not-a-shard'),
    pytest.param(['1/1'], {'shard': '3/2'}, 'run.json: shard: expected K/N with 1 <= K <= N', id='bad-shard'),
])
def test_merge_refuses_what_is_not_the_whole_of_one_finished_run(shards, run_fields, expected, tmp_path):
    folders = write_shards(tmp_path, *shards, **{k: v for k, v in run_fields.items() if k != 'shard'})
    if 'shard' in run_fields:   # rewrite the shard run.json names
        run_json = folders[0] / 'run.json'
        run_json.write_text(json.dumps({**json.loads(run_json.read_text()), 'shard': run_fields['shard']}))
    with pytest.raises((MergeError, RunRecordError)) as refused:
        merge_runs(tmp_path / 'merged', folders, ['harness', 'merge'])
    assert expected in str(refused.value) and '\n' not in str(refused.value), refused.value
    assert not (tmp_path / 'merged' / RESULTS_FILE).exists()


def test_merge_takes_every_shard_even_one_without_cases(tmp_path):
    folders = write_shards(tmp_path, '2/3', '1/3')
    write_run(tmp_path / 'empty', {}, '1.0.31', shard='3/3')
    assert merge_runs(tmp_path / 'merged', [*folders, tmp_path / 'empty'], ['harness', 'merge']) == 2


# --- records: status and field types, checked wherever results are read -------------------------------------

@pytest.mark.parametrize('field, value, expected', [
    ('status', 'passed-ish', f'status: expected one of {", ".join(STATUSES)}, got "passed-ish"'),
    ('status', None, f'status: expected one of {", ".join(STATUSES)}, got null'),
    ('img_size', '64', 'img_size: expected list[int], got "64"'),
    ('img_size', [64.5, 64], 'img_size: expected list[int], got [64.5, 64]'),
    ('patch_size', True, 'patch_size: expected int | None, got true'),
    ('window_size', [7, '7'], 'window_size: expected int | list[int] | None, got [7, "7"]'),
    ('duration_s', '1.0', 'duration_s: expected float | None, got "1.0"'),
    ('compile', 1, 'compile: expected bool | None, got 1'),
    ('failed_checks', 'parity', 'failed_checks: expected list[str], got "parity"'),
    ('output_fingerprint', [], 'output_fingerprint: expected dict[str, Any] | None, got []'),
])
def test_a_record_no_harness_writes_is_refused_naming_file_line_and_field(field, value, expected, tmp_path):
    results = tmp_path / RESULTS_FILE
    results.write_text(json.dumps(SOUND) + '\n' + json.dumps({**SOUND, 'case_id': 'b', field: value}) + '\n')
    with pytest.raises(ResultsFileError) as refused:   # the last line too: it is whole, so not cut short
        read_results(results)
    assert str(refused.value) == f'{results}:2: {expected}'


def test_a_record_without_status_is_refused():
    record = {k: v for k, v in SOUND.items() if k != 'status'}
    from harness.store.case_result import record_problem
    assert record_problem(record) == f'status: expected one of {", ".join(STATUSES)}, got none'


def test_a_sound_record_reads_with_fields_older_and_newer_harnesses_write(tmp_path):
    results = tmp_path / RESULTS_FILE
    results.write_text(json.dumps(SOUND) + '\n' + json.dumps({**SOUND, 'case_id': 'old', 'timing_precision': 0.1})
                       + '\n')
    assert [r['case_id'] for r in read_run_results(results)] == ['vit-create', 'old']


def test_report_compare_and_merge_refuse_an_unknown_status_in_one_line(tmp_path):
    write_run(tmp_path / 'base', CASES, '1.0.30')
    write_run(tmp_path / 'new', CASES, '1.0.31', shard='1/1')
    results = tmp_path / 'new' / RESULTS_FILE
    results.write_text(results.read_text().replace('"status": "failed"', '"status": "FAILED"'))
    for command in (['report', results], ['compare', tmp_path / 'base', tmp_path / 'new'],
                    ['merge', tmp_path / 'merged', tmp_path / 'new']):
        line = one_error_line(harness(*command))
        assert line.startswith(f'error: {results}:2: status: expected one of passed, ') and '"FAILED"' in line, line
