"""Judge a case's recorded figures against the matrix tolerances and its expected-failure entry.

A verdict is a promise: ``passed`` means every check that ran did so on finite numbers and held. Parity is
judged only between paths documented to compute the same model, and only when both reproduce the harness's
own resample (fidelity): otherwise a parity difference says nothing about which path is wrong, so its
figures are recorded with the reason (``parity_note``) and not judged.
"""
from __future__ import annotations

import math
from typing import Any

from harness.case.check_registry import REGISTRY, Check, registered
from harness.spec.matrix import Expectation, Tolerances
from harness.store.case_result import HELD, CaseResult


def fidelity_failures(figures: Any, tol: Tolerances) -> list[tuple[str, str]]:
    """(``fidelity``, why) if the loaded or computed values differ from the harness's resample; ``figures`` is
    any object with the fidelity fields of a :class:`CaseResult`."""
    return REGISTRY['fidelity'].failures(figures, tol)


def failed_checks(result: CaseResult, tol: Tolerances) -> list[tuple[str, str]]:
    """(check, why) for every check whose figures are outside tolerance or not finite, in stage order: each
    registered check (:mod:`harness.case.check_registry`) judged, unless its note says why not or a check it is
    judged after failed; then the checks that held on figures that are not finite."""
    failures: list[tuple[str, str]] = []
    for check in registered():
        if not _noted(result, check) and not _failed(failures, check.judged_after):
            failures += check.failures(result, tol)
    for check in registered():
        bad = [f.field for f in check.figures if not _finite(getattr(result, f.field))]
        if bad and not _noted(result, check) and not _failed(failures, (check.name,)):
            failures.append((check.name, f'{", ".join(bad)} is {getattr(result, bad[0])}'))
    return failures


def judge(result: CaseResult, tol: Tolerances, expectation: Expectation | None,
          unsupported: str | None = None) -> None:
    """Set status, reason and failed_checks on a result whose checks ran, ``tol`` resolved for its path
    (:meth:`Tolerances.for_path`); ``unsupported`` says why the path's own call could not be made on this release
    (the checks that could run did).

    A case is ``unsupported`` only when nothing that ran failed: a failed invariant makes it ``failed`` (or
    ``xfailed``) with the unsupported call named in the reason too, and an expect entry is never ``xpassed``
    by a path that did not run."""
    failures = failed_checks(result, tol)
    _note_unjudged(result, failures)
    result.failed_checks = list(dict.fromkeys(check for check, _ in failures))
    why = '; '.join(f'{check}: {detail}' for check, detail in failures)
    if unsupported is not None:
        if not failures:
            result.status, result.reason = 'unsupported', f'{unsupported}{HELD}{_listed(held(result))}'
            return
        why += f' (the {result.path} path itself is unsupported: {unsupported})'
    if expectation is None:
        result.status, result.reason = ('failed', why) if failures else ('passed', '')
    elif not failures:
        result.status, result.reason = 'xpassed', f'expected to fail {_listed(expectation.checks)} ' \
                                                  f'({expectation.reason}) but passed'
    elif set(result.failed_checks) <= set(expectation.checks):
        result.status, result.reason = 'xfailed', f'{expectation.reason} [{why}]'
    else:
        unexpected = [c for c in result.failed_checks if c not in expectation.checks]
        result.status = 'failed'
        result.reason = f'{why} (the expect entry "{expectation.reason}" covers only {_listed(expectation.checks)}, ' \
                        f'not {_listed(unexpected)})'


def held(result: CaseResult) -> list[str]:
    """The checks that ran on the checkpoint's own model, for a case whose path could not be built (they held
    when the case has no failures): the load and outputs at the native size always, reload and noop when their
    figures were recorded."""
    return ['load (native size)', *_recorded(result, 'reload'), 'finite (native size)', *_recorded(result, 'noop')]


def _recorded(result: CaseResult, name: str) -> list[str]:
    """[name] when the check recorded its figures, else []."""
    return [name] if all(getattr(result, f.field) is not None for f in REGISTRY[name].figures) else []


def _note_unjudged(result: CaseResult, failures: list[tuple[str, str]]) -> None:
    """A check with figures that was not judged because a check it is judged after failed says so in its note
    (parity on a path that fails fidelity)."""
    for check in registered():
        failed = [name for name in check.judged_after if _failed(failures, (name,))]
        if check.note and failed and getattr(result, check.note) is None \
                and getattr(result, check.figures[0].field) is not None:
            setattr(result, check.note, f'not judged: the {result.path} path fails {_listed(failed)}')


def _noted(result: CaseResult, check: Check) -> bool:
    return check.note is not None and getattr(result, check.note) is not None


def _failed(failures: list[tuple[str, str]], checks: tuple[str, ...]) -> bool:
    return any(name in checks for name, _ in failures)


def _listed(checks) -> str:
    return ', '.join(checks)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)
