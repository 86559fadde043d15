"""Real bugs and hazards of past timm releases, run through `harness run --timm VERSION`.

These install old releases (0.9.16, 1.0.11, 1.0.30) into the shared `release_cache`, once per machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from tests.test_cli import harness, records

pytestmark = pytest.mark.slow

CLIP_PATCH8 = '''
name: clip-patch8
models: [{name: vit_base_patch16_clip_224, embed_dim: 64, depth: 2, num_heads: 2}]
origins: [openai_clip, open_clip]
sizes: [224]
patch_sizes: [8]
paths: [create]
'''


def test_timm_0_9_16_fails_to_load_clip_checkpoints_at_patch8(write_matrix, tmp_path, release_cache):
    """The regression the harness exists for: timm 0.9.16 skipped patch-embed resampling for CLIP layouts."""
    path = write_matrix(CLIP_PATCH8)
    old = harness('run', path, '--timm', '0.9.16', '--out', tmp_path / 'old', '--cache', release_cache,
                  '--no-timing')
    assert old.returncode == 1, old.stdout[-3000:] + old.stderr[-3000:]
    for r in records(tmp_path / 'old'):
        assert r['timm_version'] == '0.9.16'
        assert r['status'] == 'failed' and r['failed_checks'] == ['load']
        assert 'patch_embed.proj.weight' in r['load_error']
    current = harness('run', path, '--out', tmp_path / 'new', '--cache', release_cache, '--no-timing')
    assert current.returncode == 0, current.stdout[-3000:]
    assert {r['status'] for r in records(tmp_path / 'new')} == {'passed'}


RECTANGULAR = '''
name: rectangular
models: [{name: vit_tiny_patch16_224, depth: 2, img_size: [128, 256]}]
origins: [timm]
sizes: [[64, 512]]
'''


def test_timm_1_0_30_blames_create_not_the_dynamic_path_that_is_right(write_matrix, tmp_path, release_cache):
    """On 1.0.30 a ViT trained at 128x256 and resized to 64x512 is resampled wrongly at create time (and by
    set_input_size), rightly by dynamic_img_size: dynamic passes, its parity with create recorded, not judged.
    Compared with the current release, which resamples it right, those failures are fixed; the other way
    round, regressed."""
    matrix, old, new = write_matrix(RECTANGULAR), tmp_path / '1.0.30', tmp_path / 'current'
    done = harness('run', matrix, '--timm', '1.0.30', '--out', old, '--cache', release_cache, '--no-timing')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    by_path = {r['path']: r for r in records(old)}
    assert by_path['create']['status'] == 'failed' and by_path['create']['failed_checks'] == ['fidelity']
    assert by_path['dynamic']['status'] == 'passed', by_path['dynamic']['reason']
    assert by_path['dynamic']['parity_max_abs_diff'] > 1e-3
    assert 'create path fails fidelity' in by_path['dynamic']['parity_note']

    assert harness('run', matrix, '--out', new, '--cache', release_cache, '--no-timing').returncode == 0
    forward = harness('compare', old, new, '--out', tmp_path / 'forward')
    assert forward.returncode == 0, forward.stdout + forward.stderr
    changes = {c['case_id'].rsplit('-', 1)[1]: c['change']
               for c in json.loads((tmp_path / 'forward' / 'compare.json').read_text())['cases']}
    assert changes['create'] == changes['set_input_size'] == 'fixed'
    backward = harness('compare', new, old, '--out', tmp_path / 'backward')
    assert backward.returncode == 1 and '2 regressed' in backward.stdout, backward.stdout


def test_bisect_finds_the_release_that_fixed_clip_patch8_loading(write_matrix, tmp_path, release_cache):
    """Good is the current release, bad 0.9.16: the outcome changes between 0.9.16 and 1.0.3."""
    current = timm.__version__
    path = write_matrix(CLIP_PATCH8)
    done = harness('bisect', path, '-k', 'open_clip', '--good', current, '--bad', '0.9.16', '--out', tmp_path,
                   '--cache', release_cache, '--releases', f'0.9.16,1.0.3,1.0.11,1.0.30,{current}')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / 'bisect.json').read_text())
    assert (result['older'], result['newer']) == ('0.9.16', '1.0.3')
    assert set(result['older_statuses'].values()) == {'failed'} and set(result['newer_statuses'].values()) == {'passed'}
    assert [t['version'] for t in result['tested']] == [current, '0.9.16', '1.0.11', '1.0.3']
    assert 'between timm 0.9.16 (1 failed) and 1.0.3 (1 passed)' in done.stdout


class _TouchesMarker:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize('release', ['0.9.16', '1.0.11', None])
def test_a_malicious_checkpoint_never_runs_whatever_the_release(write_matrix, tmp_path, release_cache, release):
    """timm 1.0.11 loads pretrained files with weights_only=False: the harness must refuse the file first."""
    marker = tmp_path / 'code-ran'
    torch.save({'patch_embed.proj.weight': torch.zeros(192, 3, 16, 16), 'payload': _TouchesMarker(marker)},
               tmp_path / 'finetuned.pth')
    path = write_matrix(f'''
name: evil
models: [{{name: vit_tiny_patch16_224, depth: 2, img_size: 32}}]
origins: [{{file: {tmp_path / 'finetuned.pth'}}}]
sizes: [48]
''')
    timm_args = ('--timm', release) if release else ()
    done = harness('run', path, *timm_args, '--out', tmp_path / 'out', '--cache', release_cache)
    assert done.returncode == 2, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'refused' in done.stderr and 'finetuned.pth' in done.stderr and 'Traceback' not in done.stderr
    assert not marker.exists()
    assert not (tmp_path / 'out' / 'results.jsonl').exists()
