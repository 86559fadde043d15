"""A run owns its folder: one command at a time writes it, nothing changes before a case is selected, no report
of another run outlives a killed one; SIGTERM stops a run as Ctrl-C does."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness.runtime.device_lock import Holder
from harness.store.atomic_file import write_atomically
from harness.store.run_folder import FolderInUse, owning
from tests.test_cli import harness, records
from tests.test_inputs import HOLD_LATER_CASES, TINY, one_error_line, record, start, wait_for_first_record

REPORTS = ('report.md', 'report.html', 'results.csv', 'summary.csv', 'compare.md', 'compare.json')


def contents(out: Path) -> dict[str, str]:
    """Every file of a run folder with its sha256, but the lock files (.locks/): what a run changes."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob('*'))
            if p.is_file() and '.locks' not in p.relative_to(out).parts}


def earlier_run(out: Path) -> dict[str, str]:
    """A folder as an earlier run left it: results, run.json and its reports."""
    out.mkdir()
    (out / 'results.jsonl').write_text(f'{record("a")}\n{record("b")}\n')
    (out / 'run.json').write_text(json.dumps({'matrix_name': 'inputs', 'started_at': '2026-01-02T03:04:05+00:00'}))
    for name in REPORTS:
        (out / name).write_text(f'the earlier run: {name}\n')
    return contents(out)


@pytest.mark.parametrize('k, expected', [
    ('no_such_case', "error: no case of {matrix} matched -k 'no_such_case'"),
    ('timm and (', "error: -k: 'timm and (' is not a pytest -k expression: at column 11: expected not OR left "
                   "parenthesis OR identifier; got end of input"),
    ('timm(x=1)', "error: -k: 'timm(x=1)': -k expressions match names and take no call parameters"),
], ids=['matches-nothing', 'malformed', 'call-parameters'])
def test_a_selection_of_no_case_leaves_the_folder_byte_identical(write_matrix, tmp_path, cache_dir, k, expected):
    matrix, out = write_matrix(TINY), tmp_path / 'out'
    before = earlier_run(out)
    done = harness('run', matrix, '--out', out, '--cache', cache_dir, '--no-timing', '-k', k)
    assert one_error_line(done).startswith(expected.format(matrix=matrix))
    assert contents(out) == before


def test_a_held_folder_refuses_a_second_command_naming_the_holder(tmp_path):
    out, holder = tmp_path / 'out', Holder(pid=12345, command='harness run matrices/vit.yaml --out out')
    out.mkdir()
    with owning(out, holder):
        with pytest.raises(FolderInUse, match=r'^in use by pid 12345 \(harness run matrices/vit.yaml --out out, '
                                              rf'out {out}\) since \d\d:\d\d:\d\d$'):
            with owning(out, Holder.this_process()):
                pass
    with owning(out, Holder.this_process()):   # released when the holder is done
        pass



def test_a_write_that_fails_midway_leaves_the_old_file_whole(tmp_path):
    report = tmp_path / 'report.md'
    report.write_text('the old report\n')
    with pytest.raises(UnicodeEncodeError):   # the file is open when a lone surrogate fails to encode
        write_atomically(report, 'the new report, cut short here: \udc80')
    assert report.read_text() == 'the old report\n' and [p.name for p in tmp_path.iterdir()] == ['report.md']
    write_atomically(report, 'the new report\n')
    assert report.read_text() == 'the new report\n' and [p.name for p in tmp_path.iterdir()] == ['report.md']

@pytest.mark.parametrize('delivery', ['process', 'group'])
def test_concurrent_run_is_refused_and_sigterm_stops_a_run_as_ctrl_c(write_matrix, tmp_path, cache_dir, delivery):
    """`docker stop` and `kill PID` signal the controller alone; `timeout` and CI its whole process group."""
    out = tmp_path / 'out'
    command = ['run', write_matrix(TINY), '--out', out, '--cache', cache_dir, '--no-timing']
    first = start(*command, *HOLD_LATER_CASES)
    wait_for_first_record(first, out)

    held = contents(out)
    second = one_error_line(harness(*command))
    assert second.startswith(f'error: --out: {out} is in use by pid {first.pid} (')
    assert 'hold_cases_after_first' in second
    merge = one_error_line(harness('merge', out, tmp_path))
    assert merge.startswith(f'error: OUT: {out} is in use by pid {first.pid} (')
    assert contents(out) == held and len(records(out)) == 1

    (os.killpg if delivery == 'group' else os.kill)(first.pid, signal.SIGTERM)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 143, stdout[-3000:] + stderr[-3000:]
    assert len(records(out)) == 1 and '**Totals:** 1 case: 1 passed,' in (out / 'report.md').read_text()
    hint = stderr.strip().splitlines()[-1]
    assert hint.startswith(f'interrupted by SIGTERM: 1 finished case kept in {out / "results.jsonl"}; to finish '
                           f'the run: harness run ') and hint.endswith(' --resume')
    finish = harness(*command, '--resume')
    assert finish.returncode == 0, finish.stdout[-3000:] + finish.stderr[-3000:]
    assert len(records(out)) == 8 and '**Totals:** 8 cases: 8 passed,' in (out / 'report.md').read_text()


def test_a_killed_rerun_leaves_no_report_of_the_earlier_run(write_matrix, tmp_path, cache_dir):
    out = tmp_path / 'out'
    earlier = earlier_run(out)
    moved_aside = out / 'results.20260102T030405Z.jsonl'   # named by the earlier run.json's start time
    process = start('run', write_matrix(TINY), '--out', out, '--cache', cache_dir, '--no-timing', *HOLD_LATER_CASES)
    deadline = time.monotonic() + 300
    while not moved_aside.exists():
        assert process.poll() is None and time.monotonic() < deadline, 'the run did not start'
        time.sleep(0.05)
    wait_for_first_record(process, out)   # this run's
    os.killpg(process.pid, signal.SIGKILL)   # no chance to clean up: what the folder holds is what it wrote first
    process.communicate()
    left = contents(out)
    assert not set(REPORTS) & set(left) and len(records(out)) == 1
    assert left[moved_aside.name] == earlier['results.jsonl']
    assert not [p for p in out.iterdir() if p.name.endswith('.partial')]


@pytest.mark.slow   # runs under an older release
def test_a_timm_run_holds_its_folder_and_passes_sigterm_on(write_matrix, tmp_path, release_cache):
    """Under --timm the process the user started holds the folder and waits for a child that runs the cases:
    `docker stop` signals that parent alone."""
    out = tmp_path / 'out'
    command = ['run', write_matrix(TINY), '--timm', '1.0.11', '--out', out, '--cache', release_cache, '--no-timing']
    parent = start(*command, *HOLD_LATER_CASES)
    wait_for_first_record(parent, out, timeout_s=600)
    assert one_error_line(harness(*command)).startswith(f'error: --out: {out} is in use by pid {parent.pid} (')
    os.kill(parent.pid, signal.SIGTERM)
    stdout, stderr = parent.communicate(timeout=300)
    assert parent.returncode == 143, stdout[-3000:] + stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith('interrupted by SIGTERM: 1 finished case kept in ')
    assert len(records(out)) == 1 and records(out)[0]['timm_version'] == '1.0.11'
    assert '**Totals:** 1 case: 1 passed,' in (out / 'report.md').read_text()
