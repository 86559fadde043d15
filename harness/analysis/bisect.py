"""``harness bisect``: the two adjacent timm releases between which the selected cases' outcome changes.

The outcome of a release is the statuses of the selected cases (``harness run MATRIX -k EXPR --timm
VERSION``). A release is good when its outcome equals the one at ``--good``; the search is binary over the
releases between ``--good`` and ``--bad`` in release order, whichever of the two is older, so it finds a
regression (good older) and a fix (good newer) alike. A release that cannot be installed, or where a
selected case is ``unsupported``, is skipped as ``git bisect skip`` does, and the answer then names the
untested releases it could not tell apart.

The search itself (:func:`bisect`) is a plain function of the release list and an outcome function; the
releases come from the package index (:func:`index_releases`, cached for a day); running the harness is the
command line's (:mod:`harness.cli`).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from packaging.version import InvalidVersion, Version

from harness.store import schema

INDEX_TTL_S = 24 * 3600   # how long the cached list of releases on the package index is used


class BisectError(ValueError):
    """A bisection that cannot start or cannot go on; ``str()`` is the one line to show."""


class Skip(Exception):
    """This release cannot say good or bad (it would not install, or a selected case is unsupported)."""


Outcome = dict[str, str]   # case id -> status


@dataclass(frozen=True)
class Tried:
    version: str
    statuses: Outcome | None      # None: skipped
    skipped: str | None = None    # why


@dataclass
class BisectResult:
    older: str                    # the adjacent releases (by version) between which the outcome changes
    newer: str
    older_statuses: Outcome
    newer_statuses: Outcome
    untested: list[str] = field(default_factory=list)   # skipped releases between older and newer
    tested: list[Tried] = field(default_factory=list)   # every release tried, in the order tried


def bisect(releases: list[str], outcome: Callable[[str], Outcome]) -> BisectResult:
    """``releases`` runs from the good end to the bad end (either order of versions). ``outcome`` returns a
    release's statuses or raises :class:`Skip`."""
    tested: list[Tried] = []

    def attempt(version: str) -> Outcome | None:
        try:
            statuses = outcome(version)
        except Skip as e:
            tested.append(Tried(version, None, str(e)))
            return None
        tested.append(Tried(version, statuses))
        return statuses

    good, bad = attempt(releases[0]), attempt(releases[-1])
    for end, statuses, flag in ((releases[0], good, '--good'), (releases[-1], bad, '--bad')):
        if statuses is None:
            raise BisectError(f'{flag} {end}: cannot be tested ({tested[-1 if flag == "--bad" else 0].skipped})')
    if good == bad:
        raise BisectError(f'the selected cases have the same statuses at --good {releases[0]} and --bad '
                          f'{releases[-1]}: {_statuses(good)}; nothing to bisect')
    low, high, skipped = 0, len(releases) - 1, set()
    outcomes = {0: good, len(releases) - 1: bad}
    while True:
        between = [i for i in range(low + 1, high) if i not in skipped]
        if not between:
            break
        middle = min(between, key=lambda i: (abs(i - (low + high) / 2), i))
        statuses = attempt(releases[middle])
        if statuses is None:
            skipped.add(middle)
            continue
        outcomes[middle] = statuses
        low, high = (middle, high) if statuses == good else (low, middle)
    ends = sorted((low, high), key=lambda i: Version(releases[i]))
    return BisectResult(older=releases[ends[0]], newer=releases[ends[1]], older_statuses=outcomes[ends[0]],
                        newer_statuses=outcomes[ends[1]], untested=[releases[i] for i in sorted(skipped)
                                                                    if low < i < high], tested=tested)


def between(releases: list[str], good: str, bad: str) -> list[str]:
    """The final releases from ``good`` to ``bad`` inclusive, in that direction."""
    low, high = sorted((Version(good), Version(bad)))
    chosen = sorted({r for r in releases if _final(r) and low <= Version(r) <= high} | {good, bad}, key=Version)
    return chosen if Version(good) <= Version(bad) else chosen[::-1]


def index_releases(cache_dir: Path) -> list[str]:
    """timm's releases on the package index (``pip index versions timm``), cached for a day."""
    cached = cache_dir / 'timm' / 'index.json'
    try:
        data = schema.upgrade(schema.RELEASES, json.loads(cached.read_text()))
        if time.time() - data['fetched_at'] < INDEX_TTL_S:
            return data['releases']
    except (OSError, ValueError, KeyError, TypeError):   # SchemaError is a ValueError
        pass
    done = subprocess.run([sys.executable, '-m', 'pip', 'index', 'versions', 'timm', '--disable-pip-version-check'],
                          capture_output=True, text=True)
    found = re.search(r'^Available versions: (.+)$', done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise BisectError(f'pip index versions timm failed: {(done.stderr or done.stdout).strip()[-500:]}; pass '
                          f'--releases to bisect among releases you name')
    releases = [v.strip() for v in found.group(1).split(',')]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(schema.stamped(schema.RELEASES, {'fetched_at': time.time(), 'releases': releases})))
    return releases


def run_outcome(matrix: Path, k: str | None, version: str, out: Path, cache: Path) -> Outcome:
    """The selected cases' statuses on timm ``version``: installed here (a release that will not install is
    skipped, as ``git bisect skip``), then ``harness run`` (checks only) in a child process, which finds it
    installed."""
    from harness.timm_versions import TimmInstallError, installed_timm
    try:
        installed_timm(version, cache)
    except TimmInstallError as e:
        raise Skip(str(e).splitlines()[0]) from None
    command = [sys.executable, '-m', 'harness.cli', 'run', str(matrix), '--timm', version, '--out', str(out),
               '--cache', str(cache), '--no-timing', '-q', *(['-k', k] if k else [])]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 2:
        problem = (done.stderr.strip().splitlines() or ['exit code 2'])[0]
        raise BisectError(f'harness run on timm {version}: {problem}')
    from harness.results import RESULTS_FILE, read_results
    results = out / RESULTS_FILE
    statuses = {r['case_id']: r['status'] for r in read_results(results)} if results.exists() else {}
    if not statuses:
        raise BisectError(f'harness run on timm {version} recorded no case (exit code {done.returncode}): '
                          f'{done.stderr.strip()[-500:]}')
    unsupported = sorted(case for case, status in statuses.items() if status == 'unsupported')
    if unsupported:
        raise Skip(f'unsupported on {version}: {", ".join(unsupported)}')
    return statuses


def to_json(result: BisectResult) -> dict:
    return schema.stamped(schema.BISECT, {
        'older': result.older, 'newer': result.newer, 'older_statuses': result.older_statuses,
        'newer_statuses': result.newer_statuses, 'untested': result.untested,
        'tested': [{'version': t.version, 'statuses': t.statuses, 'skipped': t.skipped} for t in result.tested]})


def _final(version: str) -> bool:
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False
    return not (parsed.is_prerelease or parsed.is_devrelease)


def _statuses(outcome: Outcome) -> str:
    return ', '.join(f'{case} {status}' for case, status in sorted(outcome.items()))
