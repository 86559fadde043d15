"""matrices/zoo.yaml: one architecture of every family, on the current release and on timm 1.0.8, the oldest
release CI runs it on: findings are statuses, never harness errors."""
from __future__ import annotations

import re
from collections import Counter

import pytest
import timm

from harness.families import families, family_of
from harness.spec.cases import expand
from harness.spec.matrix import load_matrix
from tests.conftest import REPO
from tests.test_cli import harness, records

ZOO = REPO / 'matrices' / 'zoo.yaml'
OLDEST = '1.0.8'


@pytest.fixture(scope='module')
def zoo(known_models):
    return load_matrix(ZOO, known_models=known_models)


def test_the_zoo_holds_an_architecture_of_every_family(zoo):
    assert {family_of(model.name).name for model in zoo.models} == {family.name for family in families()}


def test_the_zoo_has_the_vit_triggers_mutants_need(zoo):
    """A rectangular source loaded into its transpose (create, set_input_size) and a padded input: what kills
    "skip the pos_embed resample when the token count is unchanged" and "dynamic_img_pad pads the wrong side"."""
    vit = [c for c in expand(zoo) if family_of(c.model.name).name == 'vit']
    transposed = {c.path for c in vit if c.model.kwargs.get('img_size') == (64, 96) and c.img_size == (96, 64)}
    assert {'create', 'set_input_size', 'dynamic'} <= transposed
    padded = [c for c in vit if c.model.kwargs.get('dynamic_img_pad') and c.img_size[0] % 16 and c.img_size[1] % 16]
    assert {c.path for c in padded} == {'create', 'set_input_size', 'dynamic'}


def _zoo_run(release: str, out, cache) -> tuple[int, list[dict]]:
    args = ['--timm', release] if release != timm.__version__ else []
    done = harness('run', ZOO, *args, '--no-timing', '-q', '--out', out, '--cache', cache)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, records(out)


@pytest.mark.slow
def test_the_zoo_passes_on_the_current_release(tmp_path, release_cache):
    code, cases = _zoo_run(timm.__version__, tmp_path, release_cache)
    statuses = Counter(case['status'] for case in cases)
    assert code == 0 and set(statuses) <= {'passed', 'xfailed', 'unsupported'}, statuses
    passed_families = {family_of(case['model_name']).name for case in cases if case['status'] == 'passed'}
    assert passed_families == {family.name for family in families()} - {'fixed_size'}
    assert all('own input size' in case['reason'] for case in cases
               if family_of(case['model_name']).name == 'fixed_size')


@pytest.mark.slow
def test_the_zoo_runs_on_timm_1_0_8_without_harness_errors(tmp_path, release_cache):
    _, cases = _zoo_run(OLDEST, tmp_path, release_cache)
    assert {case['timm_version'] for case in cases} == {OLDEST}
    harness_faults = [(case['case_id'], case['reason']) for case in cases if case['status'] in ('error', 'resource')]
    assert not harness_faults
    # what 1.0.8 lacks is unsupported, with the reason: set_input_size, dynamic_img_size for Swin
    unsupported = {case['path'] for case in cases if case['status'] == 'unsupported'}
    assert 'set_input_size' in unsupported and all(case['reason'] for case in cases if case['status'] != 'passed')
    # a path the release cannot build still runs what the release can (before, such a case recorded nothing):
    # the checkpoint's load, reload and finite at its own size (noop needs a set_input_size 1.0.8 lacks here)
    resizable = [case for case in cases if case['status'] == 'unsupported'
                 and not re.match(r'\w+ takes only its own input size \(', case['reason'])]   # fixed_size on 1.0.8
    assert {case['model'] for case in resizable} >= {'beit_base_patch16_224', 'swin_tiny_patch4_window7_224'}
    for case in resizable:
        assert case['native_max_abs_diff'] == 0.0, case['case_id']
        assert 'ran and held: load (native size), reload, finite (native size)' in case['reason'], case['reason']
