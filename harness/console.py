"""What ``harness run`` prints by default: the harness's own lines, not pytest's (``-v`` gives pytest's).

    harness run matrices/smoke.yaml: timm 1.0.31 (/venv/.../timm), torch 2.14.1, into reports/smoke
    passed      vit_small_patch16_224-timm-384x384-create  1.2 s
    failed      vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create  0.8 s  fidelity: ...
    ...
    84 cases: 66 passed, 4 xfailed, 14 unsupported in 5m12s, timm 1.0.31

:data:`PYTEST_QUIET` silences pytest and xdist (no header, rootdir or scheduling lines, no per-test letters,
tracebacks or summaries); :class:`CaseConsole`, a plugin of the process that starts the workers, prints one
line per case from the reports the workers send, and collects the warnings they record (timm's
UserWarnings, once per case) into ``warnings.txt`` in the run folder instead of pytest's warnings summary.
Reasons are cut to one line here; report.md keeps them whole.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.progress import duration
from harness.store.atomic_file import write_atomically
from harness.store.case_result import STATUSES, UNSUPPORTED_PREFIX

# pytest's options under which only this module speaks: quietest verbosity (no per-test letters, no summary
# line, no xdist status), no header, no tracebacks, no short summary, no warnings summary (still recorded)
PYTEST_QUIET = ('-qq', '--no-header', '--tb=no', '-rN', '--disable-warnings')
WARNINGS_FILE = 'warnings.txt'
REASON_CHARS = 100   # a reason on a case's line; report.md has it whole
STATUS_WIDTH = max(map(len, STATUSES)) + 1


def release_line(matrix: Path, out: Path) -> str:
    """The start line: what runs, against which timm (where it is imported from) and torch."""
    import timm
    import torch
    return (f'harness run {matrix}: timm {timm.__version__} ({Path(timm.__file__).parent}), torch '
            f'{torch.__version__}, into {out}')


def case_line(status: str, case_id: str, seconds: float | None, reason: str) -> str:
    """``passed      <case id>  1.2 s`` and, but for passed cases, the reason's first line, cut."""
    line = f'{status:<{STATUS_WIDTH}}{case_id}' + (f'  {seconds:.1f} s' if seconds is not None else '')
    if status != 'passed' and reason:
        first = reason.strip().splitlines()[0] if reason.strip() else ''
        line += f'  {first[:REASON_CHARS - 3] + "..." if len(first) > REASON_CHARS else first}'
    return line


def status_of(report: pytest.TestReport) -> tuple[str, str]:
    """A case's status and reason: as the case recorded them (its report's user properties), else from the
    report (a crashed case's ``status: reason``, set by :mod:`harness.runtime.isolation`; a setup error)."""
    properties = dict(report.user_properties)
    if properties.get('status') in STATUSES:
        return properties['status'], str(properties.get('reason') or '')
    text = str(report.longrepr or '')
    status, _, reason = text.partition(': ')
    if status in STATUSES:
        return status, reason
    return ('error' if report.failed else report.outcome), text


class CaseConsole:
    """pytest plugin for the process that starts the workers: a line per case, the counts for the summary,
    the workers' warnings."""

    def __init__(self, out: Path):
        self.out = out
        self.counts: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()
        self.started_s = time.monotonic()
        self._config: pytest.Config | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report: pytest.TestReport):
        """No letter or word for any report (this plugin prints the case's line); pytest's categories kept."""
        if report.when in ('setup', 'teardown') and report.passed:
            return None
        return self._category(report), '', ''

    @staticmethod
    def _category(report: pytest.TestReport) -> str:
        if report.failed and report.when in ('setup', 'teardown'):
            return 'error'
        if hasattr(report, 'wasxfail'):
            return 'xfailed' if report.skipped else 'xpassed'
        if report.skipped and UNSUPPORTED_PREFIX in str(report.longrepr):
            return 'unsupported'
        return report.outcome

    @pytest.hookimpl(trylast=True)   # after harness.runtime.isolation has put a crashed case's reason in its report
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != 'call' and not report.failed:
            return
        status, reason = status_of(report)
        self.counts[status] += 1
        case_id = report.nodeid.split('::', 1)[-1].split('@', 1)[0]   # <file>::<case id>@<xdist group>
        seconds = report.duration if report.when == 'call' else None
        line = case_line(status, case_id, seconds, reason)
        reporter = self._config.pluginmanager.getplugin('terminalreporter') if self._config else None
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, flush=True)

    def pytest_configure(self, config: pytest.Config) -> None:
        self._config = config

    @pytest.hookimpl(tryfirst=True)   # before xdist starts its workers (its own sessionstart is trylast)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Silence xdist's status lines ("bringing up nodes...", the workers' collection counts, worker
        restarts): the cases' lines and the progress lines say how far the run is."""
        dsession = session.config.pluginmanager.getplugin('dsession')
        if dsession is not None:
            session.config.pluginmanager.unregister(name='terminaldistreporter')
            dsession.terminal = None

    def pytest_warning_recorded(self, warning_message, when: str, nodeid: str, location) -> None:
        message = warning_message.message
        self.warnings[f'{type(message).__name__}: {str(message).strip()} ({warning_message.filename}:'
                      f'{warning_message.lineno})'] += 1

    def write_warnings(self) -> Path | None:
        """``warnings.txt`` in the run folder, each distinct warning once with how often it was raised."""
        path = self.out / WARNINGS_FILE
        if not self.warnings:
            path.unlink(missing_ok=True)
            return None
        try:
            write_atomically(path, ''.join(f'{n} x {text}\n' for text, n in self.warnings.most_common()))
        except OSError as e:   # a full disk: the results and the report matter more
            print(f'warning: {path} could not be written: {e}', file=sys.stderr)
            return None
        return path

    def summary(self) -> str:
        """``84 cases: 66 passed, 4 xfailed, 14 unsupported in 5m12s, timm 1.0.31``."""
        import timm  # the release under test: the workers check they import the same (harness.runtime.run_start)
        counts = ', '.join(f'{self.counts[s]} {s}' for s in STATUSES if self.counts[s])
        total = sum(self.counts.values())
        line = (f'{total} case{"" if total == 1 else "s"}: {counts or "none run"} in '
                f'{duration(time.monotonic() - self.started_s)}, timm {timm.__version__}')
        warnings = sum(self.warnings.values())
        if warnings and (self.out / WARNINGS_FILE).exists():
            line += f'; {warnings} warning{"" if warnings == 1 else "s"} in {self.out / WARNINGS_FILE}'
        return line
