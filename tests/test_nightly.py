"""The pieces of the nightly loop: --shard, harness merge, --baseline."""
from __future__ import annotations

import json

from tests.test_cli import TWO_ORIGINS, harness, records

ALL_CASES = {f'vit_small_patch14_dinov2-{origin}-42x42-{path}'
             for origin in ('timm', 'dinov2') for path in ('create', 'set_input_size')}


def test_shards_keep_checkpoints_together_and_merge_into_the_whole_run(write_matrix, tmp_path, cache_dir):
    path = write_matrix(TWO_ORIGINS)
    shards = [tmp_path / 'shard-1', tmp_path / 'shard-2']
    for number, out in enumerate(shards, 1):
        done = harness('run', path, '--shard', f'{number}/2', '--out', out, '--cache', cache_dir, '--no-timing')
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert json.loads((out / 'run.json').read_text())['shard'] == f'{number}/2'
        assert len({r['origin'] for r in records(out)}) == 1 and len(records(out)) == 2   # one checkpoint each
        assert {r['family'] for r in records(out)} == {'vit'}   # findings group by it without importing timm
    merged = harness('merge', tmp_path / 'merged', *shards)
    assert merged.returncode == 0, merged.stderr
    assert {r['case_id'] for r in records(tmp_path / 'merged')} == ALL_CASES
    assert json.loads((tmp_path / 'merged' / 'run.json').read_text())['shard'] == ''
    assert (tmp_path / 'merged' / 'report.md').exists()

    whole = harness('run', path, '--out', tmp_path / 'whole', '--cache', cache_dir, '--no-timing',
                    '--baseline', tmp_path / 'merged')
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    assert 'compare: 4 cases: 4 unchanged' in whole.stdout
    assert (tmp_path / 'whole' / 'compare.md').exists()

    overlapping = harness('merge', tmp_path / 'bad', shards[0], shards[0])
    assert overlapping.returncode == 2 and 'is also in' in overlapping.stderr
    run_json = shards[1] / 'run.json'
    run_json.write_text(run_json.read_text().replace('"dtype": "fp32"', '"dtype": "bf16"'))
    differing = harness('merge', tmp_path / 'bad', *shards)
    assert differing.returncode == 2 and 'dtype was fp32, now bf16' in differing.stderr
    assert len(differing.stderr.strip().splitlines()) == 1


def test_a_shard_without_cases_is_not_an_error(write_matrix, tmp_path, cache_dir):
    done = harness('run', write_matrix(TWO_ORIGINS), '--shard', '3/3', '--out', tmp_path, '--cache', cache_dir,
                   '--no-timing')
    assert done.returncode == 0 and 'shard 3/3 holds no case' in done.stdout, done.stdout[-2000:] + done.stderr


def test_bad_shard_and_baseline_are_one_line(write_matrix, tmp_path):
    path = write_matrix(TWO_ORIGINS)
    for args, fragment in ((['--shard', '0/2'], '--shard: expected K/N'), (['--shard', '3'], '--shard: expected K/N'),
                           (['--baseline', tmp_path / 'nothing'], '--baseline:')):
        done = harness('run', path, '--out', tmp_path / 'out', *args)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
