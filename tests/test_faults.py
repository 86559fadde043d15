"""Faults in a case (a segfault, a hang, running out of memory) lose that case only; runs side by side share
the device without queueing behind each other's checks.

Faults are injected by tests/fault_injection.py, a pytest plugin that ``harness run`` hands to pytest and so
to every worker; the environment says which fault and at which input size.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from harness.runtime.device_lock import Holder, timing_lock
from harness.runtime.watchdog import GRACE_S
from tests.conftest import REPO
from tests.fault_injection import FAULT_ENV, SIZE_ENV, native_hang
from tests.test_cli import harness, records

FAULT_MATRIX = '''
name: faults
models: [{name: vit_small_patch14_dinov2, embed_dim: 64, depth: 2, num_heads: 2, img_size: 28}]
origins: [timm]
sizes: [42, 56, 70]
paths: [create]
'''
FAULTY_SIZE = 42   # the first case: the others run after it, in a replacement worker when it killed its own
CASE_TIMEOUT_S = 10   # past a tiny case whose checkpoint is cached (seconds on a loaded 2-core machine)

STUCK_TIMEOUT_S = 3   # FAULT_MATRIX's cases took 0.7-1.0 s each, synthesis included, at a load average of 15 on 2 cores
STUCK_SIZE = 56   # the middle case: the one before warms the cache, the one after runs in a replacement worker

LOCK_MATRIX = '''
name: locks
models: [{name: vit_small_patch14_dinov2, embed_dim: 64, depth: 2, num_heads: 2, img_size: 28}]
origins: [timm]
sizes: [42]
paths: [create]
timing: {batch_size: 1, warmup: 0, budget_s: 0, min_repeats: 1}
'''
OTHER_RUN = Holder(pid=os.getpid(), command='harness run matrices/other.yaml')


@pytest.fixture
def inject(monkeypatch):
    """Run the harness with the fault-injection plugin reachable by its workers, and ``fault`` at FAULTY_SIZE."""
    def set_fault(fault: str, size: int = FAULTY_SIZE) -> None:
        monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
        monkeypatch.setenv(FAULT_ENV, fault)
        monkeypatch.setenv(SIZE_ENV, str(size))
    return set_fault


@pytest.mark.parametrize('fault, status, reason', [
    pytest.param('segfault', 'error', 'crash: the worker process died while running this case (killed by SIGSEGV)',
                 id='segfault'),
    pytest.param('hang', 'error', f'timeout: the case ran longer than {CASE_TIMEOUT_S} s', id='hang'),
    pytest.param('out_of_memory', 'resource', 'out of memory', id='out_of_memory'),
])
def test_a_faulty_case_is_recorded_and_every_other_case_runs(fault, status, reason, inject, write_matrix, tmp_path,
                                                              cache_dir):
    inject(fault)
    out = tmp_path / 'out'
    done = harness('run', write_matrix(FAULT_MATRIX), '--out', out, '--cache', cache_dir, '--no-timing',
                   '--case-timeout', CASE_TIMEOUT_S, '-p', 'tests.fault_injection',
                   timeout_s=300)   # a replacement worker never given its cases would hang the run
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    by_size = {r['img_size'][0]: r for r in records(out)}
    assert sorted(by_size) == [42, 56, 70] and len(records(out)) == 3   # each case recorded, once
    faulty = by_size.pop(FAULTY_SIZE)
    assert faulty['status'] == status and faulty['reason'].startswith(reason), faulty['reason']
    assert faulty['model'] == 'vit_small_patch14_dinov2' and faulty['timm_version'] and faulty['device'] == 'cpu'
    assert {r['status'] for r in by_size.values()} == {'passed'}
    assert (out / 'report.md').exists()


@pytest.mark.parametrize('fault, how', [
    pytest.param('native_hang', 'a native call held the GIL, so faulthandler ended its worker; it was at (most '
                                'recent call first)\n  File "' + str(REPO / 'tests' / 'fault_injection.py') + '", '
                                f'line {native_hang.__code__.co_firstlineno + 1} in native_hang\n', id='native_hang'),
    pytest.param('stop', 'its worker was stopped or stuck where no watchdog of its own could end it, so the harness '
                         'killed it (SIGKILL)', id='stop'),
])
def test_a_case_stuck_where_no_python_thread_runs_is_ended_at_its_deadline(fault, how, inject, write_matrix, tmp_path,
                                                                           cache_dir):
    """A C call holding the GIL (the worker's Python watchdog thread cannot run: faulthandler's C thread ends the
    worker) and a stopped worker (nothing in it runs: the controller kills it) each cost the case, not the run."""
    inject(fault, STUCK_SIZE)
    out = tmp_path / 'out'
    done = harness('run', write_matrix(FAULT_MATRIX), '--out', out, '--cache', cache_dir, '--no-timing',
                   '--case-timeout', STUCK_TIMEOUT_S, '-p', 'tests.fault_injection', timeout_s=120)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    by_size = {r['img_size'][0]: r for r in records(out)}
    assert sorted(by_size) == [42, 56, 70] and len(records(out)) == 3
    stuck = by_size.pop(STUCK_SIZE)
    assert stuck['status'] == 'error', stuck
    assert stuck['reason'].startswith(f'timeout: the case ran longer than {STUCK_TIMEOUT_S} s; {how}'), stuck['reason']
    # ended by the second watchdog (deadline + GRACE_S) or the third (+ 2 GRACE_S), not by the fault's 3600 s
    assert STUCK_TIMEOUT_S <= stuck['duration_s'] < STUCK_TIMEOUT_S + 2 * GRACE_S + 5, stuck['duration_s']
    assert {r['status'] for r in by_size.values()} == {'passed'}


def test_n_0_is_a_usage_error(write_matrix, tmp_path):
    done = harness('run', write_matrix(FAULT_MATRIX), '--out', tmp_path, '-n', '0')
    assert done.returncode == 2
    assert done.stderr.count('\n') == 1 and '-n' in done.stderr and 'Traceback' not in done.stderr


def test_checks_go_on_while_another_run_times_the_device(start_harness, write_matrix, tmp_path, cache_dir):
    with timing_lock(tmp_path / 'other', torch.device('cpu'), cache_dir, OTHER_RUN, say=print):
        run, log = start_harness('run', write_matrix(LOCK_MATRIX), '--out', tmp_path / 'out', '--cache', cache_dir,
                                 '--no-timing')
        assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert [r['status'] for r in records(tmp_path / 'out')] == ['passed']


def test_timing_waits_for_another_runs_timing_and_says_who_holds_it(start_harness, write_matrix, tmp_path,
                                                                   cache_dir):
    with timing_lock(tmp_path / 'other', torch.device('cpu'), cache_dir, OTHER_RUN, say=print):
        run, log = start_harness('run', write_matrix(LOCK_MATRIX), '--out', tmp_path / 'out', '--cache', cache_dir)
        waiting = _wait_for_line(log, 'waiting for the cpu timing lock', run, timeout_s=120)
        assert run.poll() is None   # still waiting: nothing else lets it go on
    assert re.fullmatch(rf'waiting for the cpu timing lock held by pid {os.getpid()} \(harness run '
                        rf'matrices/other.yaml, out {re.escape(str(tmp_path / "other"))}\) since \d\d:\d\d:\d\d',
                        waiting), waiting
    assert run.wait(timeout=120) == 0, log.read_text()[-3000:]
    assert [r['status'] for r in records(tmp_path / 'out')] == ['passed']
    assert records(tmp_path / 'out')[0]['time_median_ms'] is not None


@pytest.fixture
def start_harness(tmp_path):
    """``harness`` started in the background, its output in a log; ended with the test if still running."""
    runs = []

    def start(*args) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f'harness-{len(runs)}.log'
        with open(log, 'w') as output:
            runs.append(subprocess.Popen([sys.executable, '-m', 'harness.cli', *map(str, args)], stdout=output,
                                         stderr=subprocess.STDOUT, start_new_session=True))
        return runs[-1], log
    yield start
    for run in runs:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)   # its workers too


def _wait_for_line(log: Path, start: str, process: subprocess.Popen, timeout_s: float) -> str:
    """The first line of the process's output that starts with ``start``, as soon as it is written."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text().splitlines() if line.startswith(start)]
        if lines:
            return lines[0]
        assert process.poll() is None, f'the run ended without waiting:\n{log.read_text()[-3000:]}'
        time.sleep(0.5)
    raise AssertionError(f'no line starting {start!r} within {timeout_s} s:\n{log.read_text()[-3000:]}')


def test_a_rerun_finds_the_record_its_worker_wrote_before_dying(tmp_path):
    """A re-run moves the earlier results aside after the crash recorder started: the record a worker wrote in
    the new file before it died is found (not shadowed by a second, `error` one), and on --resume (the same
    file) the earlier run's records are not taken for this run's."""
    from harness.results import RESULTS_FILE
    from harness.runtime.isolation import CrashRecorder
    from harness.spec.model import Selection
    results = tmp_path / RESULTS_FILE
    old = {'matrix': 'm', 'case_id': 'a', 'status': 'failed', 'reason': 'earlier run'}
    results.write_text(json.dumps(old) + '\n' * 40)   # longer than the new file will be
    recorder = CrashRecorder(tmp_path, tmp_path, options_for=None, watchdog=None, selection=Selection())
    assert recorder._record_of_this_run('m', 'a') is None   # --resume: the earlier run's record is not this run's
    results.rename(tmp_path / 'results-earlier.jsonl')   # the re-run sets the old results aside
    new = {'matrix': 'm', 'case_id': 'a', 'status': 'passed', 'reason': ''}
    results.write_text(json.dumps(new) + '\n')
    assert recorder._record_of_this_run('m', 'a') == new
