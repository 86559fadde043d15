"""``harness ab``: two timm releases in one job on one machine, their timings interleaved, then compared.

1. Checks: ``harness run MATRIX --timm <release> --no-timing`` for both releases at once, into
   ``<out>/base`` and ``<out>/new`` (each a normal run: isolation, run.json, report).
2. Timing: one :mod:`harness.timing.worker` process per release. Case by case, the driver asks the two
   for a timing round each in turn (base, new, new, base, ...: the order alternates), ``rounds`` times, each
   round a ``1/rounds`` share of the case's budget. A machine that gets slower during the job slows both
   releases alike, which is what lets a CI runner whose speed drifts still detect a 15% slowdown (asv
   interleaves its rounds between environments for the same reason). The machine-wide timing lock is held
   throughout. Each timed case's record is appended again with its samples and their rounds (the last
   record of a case wins).
3. ``harness compare <out>/base <out>/new`` into ``<out>``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import selectors
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from harness.progress import Progress
from harness.results import RESULTS_FILE, append_result, read_results
from harness.store.case_result import CaseResult
from harness.store.run_record import read_run_record, write_run_record
from harness.timm_versions import REEXEC_ENV, TimmInstallError, installed_timm

if TYPE_CHECKING:
    from harness.timing.config import TimingConfig

SIDES = ('base', 'new')
UNTIMED_STATUSES = ('error', 'unsupported')   # no model to time
REPLY_TIMEOUT_S = 900                         # a round that takes longer: the worker is ended, the case untimed


class AbError(ValueError):
    """A release that will not install or a matrix the checks refused; ``str()`` is the one line to show."""


@dataclass
class Release:
    side: str                     # base or new
    version: str                  # the timm __version__ it imports as
    site_dir: Path                # where the release is installed
    out: Path                     # its run folder
    samples: dict[str, list[tuple[int, float]]] = field(default_factory=dict)   # case id -> (round, ms)
    work: dict[str, tuple[int, int]] = field(default_factory=dict)   # case id -> (batch size used, FLOPs per image)
    source: str = ''              # what --base/--new named: a release, a wheel or a source tree


def release(side: str, version: str, out: Path, cache: Path) -> Release:
    """``version`` (a release, wheel or source tree, as --timm takes) installed for one side."""
    try:
        site_dir, imported_as = installed_timm(version, cache)
        return Release(side, imported_as, site_dir, out / side, source=version)
    except TimmInstallError as e:
        raise AbError(f'--{side} {version}: {e}') from None


def run_checks(matrix: Path, releases: list[Release], cache: Path, shard: str | None,
               keyword: str | None = None, full_size: bool = False) -> list[int]:
    """``harness run --no-timing`` for every release at once, on the cases ``keyword`` (``-k``) selects, zoo
    entries at their real configuration with ``full_size`` (``--full-size``); their exit codes. Only cases that
    ran are timed (:func:`timed_cases`), as their run.json says (shard, full size)."""
    children = [subprocess.Popen([sys.executable, '-m', 'harness.cli', 'run', str(matrix), '--timm', r.source,
                                  '--out', str(r.out), '--cache', str(cache), '--no-timing', '-q',
                                  *(['--shard', shard] if shard else []), *(['-k', keyword] if keyword else []),
                                  *(['--full-size'] if full_size else [])])
                for r in releases]
    return [child.wait() for child in children]


def timed_cases(releases: list[Release]) -> list[str]:
    """Case ids, in the base run's order, that built on at least one side."""
    order: dict[str, None] = {}
    for r in releases:
        for record in _records(r):
            if record['status'] not in UNTIMED_STATUSES:
                order.setdefault(record['case_id'])
    return list(order)


def interleave(matrix: Path, releases: list[Release], case_ids: list[str], rounds: int, cache: Path,
               say: Callable[[str], None] = print) -> TimingConfig | None:
    """Time every case in ``rounds`` rounds per release, alternating the releases; samples go to each
    :attr:`Release.samples`. The timing configuration used, or None when the matrix turns timing off."""
    import torch

    from harness.runtime.device_lock import Holder, timing_lock
    from harness.spec.matrix import Selection, load_matrix
    base_run = read_run_record(releases[0].out)
    selection = Selection.of_run(base_run.shard, base_run.full_size)
    timing = load_matrix(matrix, selection=selection).timing.for_run(
        base_run.device, batch_size=base_run.batch_size, dtype=base_run.dtype)
    if not timing.enabled:
        return None
    # each round: a share of the budget and of the minimum passes; it ends early, like a whole case, once its
    # own median is known to median_rse
    round_timing = dataclasses.replace(timing, budget_s=timing.budget_s / rounds,
                                       min_repeats=math.ceil(timing.min_repeats / rounds))
    settings = {'matrix': str(matrix), 'shard': base_run.shard, 'full_size': base_run.full_size,
                'device': base_run.device, 'cache': str(cache),
                'round_timing': dataclasses.asdict(round_timing)}
    workers = {r.side: _Worker(r, settings) for r in releases}
    device = torch.device(base_run.device)
    with timing_lock(releases[0].out, device, cache, Holder.this_process(), say):
        _alternate(releases, workers, case_ids, rounds, say)
    return timing


def _alternate(releases: list[Release], workers: dict[str, _Worker], case_ids: list[str], rounds: int,
               say: Callable[[str], None]) -> None:
    progress = Progress(len(case_ids))
    try:
        for case_id in case_ids:
            failed: set[str] = set()
            for round_number in range(1, rounds + 1):
                order = releases if round_number % 2 else releases[::-1]
                for r in order:
                    if r.side in failed:
                        continue
                    reply = workers[r.side].ask({'case': case_id, 'round': round_number})
                    if 'error' in reply:
                        failed.add(r.side)
                        r.samples.pop(case_id, None)   # a case timed in some rounds only is not interleaved
                        say(f'ab: {case_id}: {r.side} (timm {r.version}) not timed: {reply["error"]}')
                        continue
                    r.samples.setdefault(case_id, []).extend((round_number, ms) for ms in reply['samples_ms'])
                    r.work[case_id] = (reply['batch_size_used'], reply['flops_per_image'])
            progress.done += 1
            say(f'ab [{progress.line()}] {case_id}: ' + ', '.join(
                f'{r.side} {_median(r.samples.get(case_id))}' for r in releases))
    finally:
        for worker in workers.values():
            worker.close()


def record_samples(r: Release, rounds: int, timing: TimingConfig) -> int:
    """Append each timed case's record again, with its interleaved samples; the number of cases timed."""
    from harness.case.timed import record_timing
    from harness.timing.forward import Timing
    fields = {f.name for f in dataclasses.fields(CaseResult)}
    timed = 0
    for record in _records(r):
        pairs = r.samples.get(record['case_id'])
        if not pairs:
            continue
        result = CaseResult(**{k: v for k, v in record.items() if k in fields})
        batch_size_used, result.flops_per_image = r.work[record['case_id']]
        samples = Timing(tuple(ms for _, ms in pairs), timing.batch_size, timing.budget_s, timing.median_rse,
                         timing.max_cv, batch_size_used, None)
        record_timing(result, samples, [round_number for round_number, _ in pairs])
        append_result(r.out, result)
        timed += 1
    run = read_run_record(r.out)
    write_run_record(r.out, dataclasses.replace(run, timing_budget_s=timing.budget_s,
                                                timing_median_rse=timing.median_rse, timing_rounds=rounds))
    return timed


def _records(r: Release) -> list[dict]:
    results = r.out / RESULTS_FILE
    return read_results(results) if results.exists() else []


def _median(pairs: list[tuple[int, float]] | None) -> str:
    if not pairs:
        return 'untimed'
    return f'{statistics.median(ms for _, ms in pairs):.2f} ms median of {len(pairs)} passes'


class _Worker:
    """A :mod:`harness.timing.worker` for one release, started again if it dies."""

    def __init__(self, r: Release, settings: dict):
        self.release = r
        self.settings = json.dumps({**settings, 'out': str(r.out)})
        self.process: subprocess.Popen | None = None

    def ask(self, request: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._start()
        self.process.stdin.write(json.dumps(request) + '\n')
        self.process.stdin.flush()
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            line = self.process.stdout.readline() if selector.select(REPLY_TIMEOUT_S) else ''
        if not line:
            self.close()
            return {'error': 'the timing worker died or hung (its stderr is above)'}
        return json.loads(line)

    def _start(self) -> None:
        env = {**os.environ, REEXEC_ENV: self.release.version,
               'PYTHONPATH': os.pathsep.join(filter(None, [str(self.release.site_dir), os.environ.get('PYTHONPATH')]))}
        self.process = subprocess.Popen([sys.executable, '-m', 'harness.timing.worker', self.settings], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def close(self) -> None:
        if self.process is None:
            return
        self.process.stdin.close()   # the worker's loop ends
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
