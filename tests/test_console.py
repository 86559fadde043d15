"""What `harness run` prints: the harness's lines by default (harness.console), pytest's under -v."""
from __future__ import annotations

import re
import warnings
from types import SimpleNamespace

import timm

from harness.console import CaseConsole, case_line, status_of
from tests.test_cli import TWO_ORIGINS, harness

MATRIX = TWO_ORIGINS + '''expect:
  - match: {origin: dinov2, path: create}
    checks: [load]
    reason: a load failure that does not happen
'''
IDS = [f'vit_small_patch14_dinov2-{origin}-42x42-{path}' for origin in ('timm', 'dinov2')
       for path in ('create', 'set_input_size')]


def test_a_default_run_prints_one_line_per_case_and_names_the_timm_release(write_matrix, tmp_path, cache_dir):
    matrix = write_matrix(MATRIX)
    done = harness('run', matrix, '--out', tmp_path / 'out', '--cache', cache_dir, '--no-timing', '-n', '2')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]   # the xpassed case
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f'harness run {matrix}: timm {timm.__version__} (')
    case_line = r'(?P<status>\w+) +(?P<id>\S+)  \d+\.\d s(  (?P<reason>.+))?$'
    cases = {m['id']: m for line in lines if (m := re.match(case_line, line))}
    assert sorted(cases) == sorted(IDS)
    assert {i: m['status'] for i, m in cases.items()} == {i: 'xpassed' if i == IDS[2] else 'passed' for i in IDS}
    assert cases[IDS[2]]['reason'] and cases[IDS[0]]['reason'] is None   # a passed case gives no reason
    assert re.fullmatch(rf'4 cases: 3 passed, 1 xpassed in \S+, timm {re.escape(timm.__version__)}', lines[-1])
    for pytest_words in ('@', 'rootdir', 'configfile', 'scheduling tests', 'bringing up nodes', 'PASSED',
                         'XPASS', 'test session starts', '::'):
        assert pytest_words not in done.stdout + done.stderr


def test_verbose_gives_pytests_own_lines(write_matrix, tmp_path, cache_dir):
    done = harness('run', write_matrix(MATRIX), '--out', tmp_path / 'out', '--cache', cache_dir, '--no-timing',
                   '-k', 'timm and create', '-v')
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(rf'PASSED .*matrix\.yaml::{IDS[0]}', done.stdout)
    assert not re.search(r'^passed ', done.stdout, re.M)


def test_a_case_line_cuts_its_reason_to_one_short_line():
    assert case_line('passed', 'a-create', 1.234, 'ignored for passed') == 'passed      a-create  1.2 s'
    reason = 'fidelity: pos_embed differs by 0.15 ' + 'x' * 200 + '\nsecond line'
    line = case_line('failed', 'a-create', 0.5, reason)
    assert line.startswith('failed      a-create  0.5 s  fidelity: pos_embed differs by 0.15 x')
    assert line.endswith('...') and len(line) == len('failed      a-create  0.5 s  ') + 100


def test_a_crashed_case_reads_its_status_from_the_report():
    """harness.runtime.isolation puts `status: reason` in a crashed case's report; a case that ran records both."""
    crashed = SimpleNamespace(user_properties=[], longrepr='error: crash: the worker process died', failed=True)
    assert status_of(crashed) == ('error', 'crash: the worker process died')
    ran = SimpleNamespace(user_properties=[('status', 'failed'), ('reason', 'parity: 0.2')], longrepr='x')
    assert status_of(ran) == ('failed', 'parity: 0.2')


def test_warnings_go_to_a_file_in_the_run_folder_once_each_with_a_count(tmp_path):
    console = CaseConsole(tmp_path)
    for _ in range(3):
        console.pytest_warning_recorded(warnings.WarningMessage(UserWarning('resized'), UserWarning, 'timm/x.py', 7),
                                        'runtest', 'id', None)
    assert console.write_warnings().read_text() == '3 x UserWarning: resized (timm/x.py:7)\n'
    assert console.summary().endswith(f'; 3 warnings in {tmp_path / "warnings.txt"}')
