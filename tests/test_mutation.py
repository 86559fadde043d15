"""The mutation suite (benchmarks/mutation_score.py): its mutants still match the installed timm, and a fast subset
runs end to end — on a tiny ViT trained on a rectangular 32x64 input and resized to the transposed 64x32 (the same
token count), the unmutated copy passes and each mutant is killed by the check it breaks, on the path it breaks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'benchmarks'))

from mutants import AREAS, MUTANTS, MutantMismatch  # noqa: E402

TINY = '''
name: mutation-tiny
models:
  - {name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: [32, 64]}
origins: [timm]
sizes: [[64, 32]]
paths: [create, dynamic]
num_images: 2
'''
# mutant -> what kills it on TINY: a create-time skip is seen on create only, a dynamic-forward bug on dynamic only
EXPECTED_KILLS = {
    'vit-filter-skip-equal-count': {'fidelity on create'},
    'vit-dynamic-hw-swapped': {'fidelity on dynamic'},
    'posembed-skip-equal-count': {'fidelity on create', 'fidelity on dynamic'},
}


def test_every_mutant_matches_the_installed_release_once():
    package = Path(timm.__file__).parent
    assert len(MUTANTS) >= 25
    assert len({m.id for m in MUTANTS}) == len(MUTANTS)
    for mutant in MUTANTS:
        assert mutant.area in AREAS, mutant.id
        assert mutant.find != mutant.replace, mutant.id
        assert (package / mutant.file).read_text().count(mutant.find) == 1, mutant.id


def test_a_snippet_that_no_longer_matches_names_the_mutant(tmp_path):
    mutant = MUTANTS[0]
    (tmp_path / mutant.file).parent.mkdir(parents=True)
    (tmp_path / mutant.file).write_text('# a rewritten release\n')
    with pytest.raises(MutantMismatch, match=f'mutant {mutant.id}: .* occurs 0 times in timm/{mutant.file}'):
        mutant.apply(tmp_path)


@pytest.mark.slow
def test_the_fast_subset_kills_each_mutant_by_the_check_it_breaks(tmp_path, release_cache):
    matrix = tmp_path / 'mutation-tiny.yaml'
    matrix.write_text(textwrap.dedent(TINY))
    command = [sys.executable, str(REPO / 'benchmarks' / 'mutation_score.py'), '--mutants', ','.join(EXPECTED_KILLS),
               '--matrices', str(matrix), '-n', '1', '--out', str(tmp_path / 'out'), '--cache', str(release_cache)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'mutation score: {len(EXPECTED_KILLS)}/{len(EXPECTED_KILLS)}' in done.stdout
    report = json.loads((tmp_path / 'out' / 'mutation.json').read_text())
    baseline = report['baseline']['mutation-tiny']
    assert {case: outcome['status'] for case, outcome in baseline.items()} == {
        'vit_tiny_patch16_224-timm-64x32-create': 'passed', 'vit_tiny_patch16_224-timm-64x32-dynamic': 'passed'}
    for mutant in report['mutants']:
        assert mutant['killed'], mutant
        assert set(mutant['killed_by']) == EXPECTED_KILLS[mutant['id']], mutant
        assert mutant['matrices'] == {'mutation-tiny': ['vit_tiny_patch16_224']}
