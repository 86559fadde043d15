"""`harness bisect`'s search, on made-up release histories (the real one is in test_releases.py)."""
from __future__ import annotations

import json
import math
import subprocess
import time
from types import SimpleNamespace

import pytest
from packaging.version import Version

from harness.analysis.bisect import BisectError, Skip, between, bisect, index_releases

RELEASES = [f'1.0.{n}' for n in range(20)]


def history(changed_at: str, skip: tuple[str, ...] = ()):
    """An outcome function: one case passes before ``changed_at`` and fails from it on; ``skip`` cannot run."""
    def outcome(version: str) -> dict[str, str]:
        if version in skip:
            raise Skip(f'could not install timm=={version}')
        return {'case': 'failed' if Version(version) >= Version(changed_at) else 'passed'}
    return outcome


@pytest.mark.parametrize('changed_at', ['1.0.1', '1.0.7', '1.0.19'])
def test_finds_the_adjacent_pair_of_a_regression_in_log2_tries(changed_at):
    result = bisect(RELEASES, history(changed_at))
    index = RELEASES.index(changed_at)
    assert (result.older, result.newer) == (RELEASES[index - 1], changed_at)
    assert (result.older_statuses, result.newer_statuses) == ({'case': 'passed'}, {'case': 'failed'})
    assert len(result.tested) <= math.ceil(math.log2(len(RELEASES))) + 2


def test_finds_a_fix_when_the_good_release_is_the_newer():
    fixed_in = '1.0.12'
    outcome = history(fixed_in)
    result = bisect(RELEASES[::-1], lambda v: {'case': {'passed': 'failed', 'failed': 'passed'}[outcome(v)['case']]})
    assert (result.older, result.newer) == ('1.0.11', fixed_in)


def test_a_skipped_release_at_the_change_is_named_untested():
    result = bisect(RELEASES, history('1.0.9', skip=('1.0.9',)))
    assert (result.older, result.newer, result.untested) == ('1.0.8', '1.0.10', ['1.0.9'])
    assert [t.version for t in result.tested if t.statuses is None] == ['1.0.9']


def test_skipped_releases_away_from_the_change_do_not_matter():
    result = bisect(RELEASES, history('1.0.15', skip=('1.0.9', '1.0.10')))
    assert (result.older, result.newer, result.untested) == ('1.0.14', '1.0.15', [])


def test_equal_outcomes_at_both_ends_cannot_be_bisected():
    with pytest.raises(BisectError, match='same statuses at --good 1.0.0 and --bad 1.0.19'):
        bisect(RELEASES, lambda version: {'case': 'passed'})


def test_an_untestable_end_cannot_be_bisected():
    with pytest.raises(BisectError, match='--good 1.0.0: cannot be tested'):
        bisect(RELEASES, history('1.0.5', skip=('1.0.0',)))


def test_between_keeps_final_releases_in_the_search_direction():
    listed = ['1.0.3', '0.9.16', '1.0.0.dev0', '1.0.4rc1', '1.0.7', '1.1.0', '0.9.2']
    assert between(listed, '0.9.16', '1.0.7') == ['0.9.16', '1.0.3', '1.0.7']
    assert between(listed, '1.0.7', '0.9.16') == ['1.0.7', '1.0.3', '0.9.16']


def test_index_releases_are_read_from_pip_once_a_day(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return SimpleNamespace(returncode=0, stderr='',
                               stdout='timm (1.0.31)\nAvailable versions: 1.0.31, 1.0.30, 0.9.16\n')

    monkeypatch.setattr(subprocess, 'run', fake_run)
    assert index_releases(tmp_path) == ['1.0.31', '1.0.30', '0.9.16']
    assert index_releases(tmp_path) == ['1.0.31', '1.0.30', '0.9.16'] and len(calls) == 1
    cached = tmp_path / 'timm' / 'index.json'
    cached.write_text(json.dumps({'fetched_at': time.time() - 2 * 24 * 3600, 'releases': ['old']}))
    assert index_releases(tmp_path) == ['1.0.31', '1.0.30', '0.9.16'] and len(calls) == 2


def test_index_failure_says_how_to_go_on(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, 'run', lambda *a, **k: SimpleNamespace(returncode=1, stdout='',
                                                                           stderr='ERROR: no network'))
    with pytest.raises(BisectError, match='no network.*--releases'):
        index_releases(tmp_path)


def test_a_release_that_will_not_install_is_skipped_without_running_it(tmp_path, monkeypatch):
    """The install is bisect's own step (it searched a child's stderr for "could not install" before)."""
    import subprocess

    from harness import timm_versions
    from harness.analysis import bisect as bisect_module

    def refuse(spec, cache_dir):
        raise timm_versions.TimmInstallError(f'could not install timm=={spec}:\nERROR: no matching distribution')

    def never(*args, **kwargs):
        raise AssertionError('harness run started for a release that is not installed')

    monkeypatch.setattr(timm_versions, 'installed_timm', refuse)
    monkeypatch.setattr(subprocess, 'run', never)
    with pytest.raises(Skip, match=r'^could not install timm==0\.1\.0:$'):
        bisect_module.run_outcome(tmp_path / 'm.yaml', None, '0.1.0', tmp_path / 'out', tmp_path / 'cache')
