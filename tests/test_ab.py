"""`harness ab`: two releases' timing rounds interleaved, then compared."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm

from harness.analysis.ab import Release, _alternate
from tests.test_cli import harness, records


class FakeWorker:
    """Answers every round with one sample, the round number in ms, and logs who was asked when."""

    def __init__(self, side: str, log: list[tuple[str, str, int]], fail_on: str | None = None):
        self.side, self.log, self.fail_on = side, log, fail_on

    def ask(self, request: dict) -> dict:
        self.log.append((self.side, request['case'], request['round']))
        if request['case'] == self.fail_on and request['round'] == 2:
            return {'case': request['case'], 'error': 'RuntimeError: boom'}
        return {'case': request['case'], 'round': request['round'], 'samples_ms': [float(request['round'])],
                'batch_size_used': 1, 'flops_per_image': 1000}

    def close(self) -> None:
        pass


def test_rounds_alternate_between_releases_case_by_case(tmp_path):
    releases = [Release('base', '1.0.30', tmp_path, tmp_path / 'base'),
                Release('new', '1.0.31', tmp_path, tmp_path / 'new')]
    log: list[tuple[str, str, int]] = []
    workers = {'base': FakeWorker('base', log), 'new': FakeWorker('new', log, fail_on='b')}
    _alternate(releases, workers, ['a', 'b'], rounds=3, say=lambda line: None)
    assert log[:6] == [('base', 'a', 1), ('new', 'a', 1), ('new', 'a', 2), ('base', 'a', 2), ('base', 'a', 3),
                       ('new', 'a', 3)]
    assert releases[0].samples['a'] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert releases[0].samples['b'] == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert 'b' not in releases[1].samples                       # failed in round 2: not timed at all
    assert ('new', 'b', 3) not in log                             # and not asked again


# harness ab's default --rounds, which scripts/nightly.sh runs it with
ROUNDS = 5


@pytest.mark.slow
def test_ab_between_two_releases_times_in_interleaved_rounds_and_compares(nightly_job):
    """`harness ab TINY_AB --base <current> --new <1.0.30's source tree>` as the nightly job runs it on timm's main
    branch (tests/conftest.py)."""
    done, ab = nightly_job.done, nightly_job.out / 'main' / 'matrix' / 'shard-1'
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]   # the stand-in for main regressed
    assert 'compare: 3 cases: 2 regressed, 1 outputs_changed' in done.stdout
    for side, release in (('base', timm.__version__), ('new', '1.0.30')):
        run = json.loads((ab / side / 'run.json').read_text())
        assert run['timing_rounds'] == ROUNDS and run['timing_budget_s'] == 0.3
        assert {r['timm_version'] for r in records(ab / side)} == {release}
        for record in records(ab / side):
            if record['time_samples_ms']:
                assert sorted(set(record['time_sample_rounds'])) == list(range(1, ROUNDS + 1))
                assert len(record['time_sample_rounds']) == len(record['time_samples_ms']) >= 4
    cases = json.loads((ab / 'compare.json').read_text())['cases']
    assert {c['timing_change'] for c in cases} <= {'same', 'noisy', 'faster', 'slower'}
    assert Path(ab / 'compare.md').exists()


def test_k_selects_the_same_cases_on_both_releases(tmp_path, monkeypatch):
    """`harness ab -k` runs each release's checks on the cases -k selects (only those are timed after); a
    malformed expression is refused before anything starts, as for harness run."""
    from harness.analysis import ab
    started = []

    class Child:
        def __init__(self, args):
            started.append(args)

        def wait(self):
            return 0

    monkeypatch.setattr(ab.subprocess, 'Popen', Child)
    releases = [Release('base', '1.0.30', tmp_path, tmp_path / 'base'),
                Release('new', '1.0.31', tmp_path, tmp_path / 'new')]
    assert ab.run_checks(tmp_path / 'm.yaml', releases, tmp_path, None, 'open_clip and create') == [0, 0]
    assert all(args[-2:] == ['-k', 'open_clip and create'] for args in started) and len(started) == 2
    assert ab.run_checks(tmp_path / 'm.yaml', releases, tmp_path, '1/16', None, full_size=True) == [0, 0]
    assert all(args[-3:] == ['--shard', '1/16', '--full-size'] for args in started[2:]) and len(started) == 4
    monkeypatch.undo()   # (the module patched is subprocess itself)
    matrix = tmp_path / 'm.yaml'
    matrix.write_text('name: m\nmodels: [vit_tiny_patch16_224]\n')
    refused = harness('ab', matrix, '--base', '1.0.30', '--new', '1.0.31', '-k', 'timm and (')
    assert refused.returncode == 2 and "-k: 'timm and (' is not a pytest -k expression" in refused.stderr



def test_full_size_reaches_both_runs_and_no_timing_skips_the_rounds(tmp_path, monkeypatch):
    """`harness ab --full-size` runs each release's checks with --full-size (the nightly's GPU runner: zoo entries
    at their real configuration); --no-timing (its CPU runner) compares the checks without timing rounds."""
    from harness import cli
    from harness.analysis import ab
    from harness.commands import ab as ab_command
    passed_on, compared = [], []
    monkeypatch.setattr(ab, 'release', lambda side, version, out, cache: Release(side, version, tmp_path, out / side))
    monkeypatch.setattr(ab, 'run_checks', lambda *args: passed_on.append(args[3:]) or [0, 0])
    monkeypatch.setattr(ab, 'interleave', lambda *args: pytest.fail('--no-timing, yet timed'))
    monkeypatch.setattr(ab_command, 'compare_runs', lambda base, new, out, spec: compared.append(out) or 0)
    matrix = tmp_path / 'm.yaml'
    matrix.write_text('name: m\nmodels: [vit_tiny_patch16_224]\n')
    assert cli.main(['ab', str(matrix), '--base', '1.0.30', '--new', '1.0.31', '--out', str(tmp_path / 'ab'),
                     '--shard', '2/16', '--full-size', '--no-timing']) == 0
    assert passed_on == [('2/16', None, True)] and compared == [tmp_path / 'ab']
