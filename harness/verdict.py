"""Judge a case's recorded figures against the matrix tolerances and its expected-failure entry.

A verdict is a promise: ``passed`` means every check that ran did so on finite numbers and held. Parity is
judged only between paths documented to compute the same model, and only when both reproduce the harness's
own resample (fidelity): otherwise a parity difference says nothing about which path is wrong, so its
figures are recorded with the reason (``parity_note``) and not judged.
"""
from __future__ import annotations

import math
from typing import Any

from harness.matrix import Expectation, Tolerances
from harness.results import HELD, CaseResult

# the recorded figures each check rests on: any of them NaN or infinite fails the check, tolerance or not
FIGURES = {
    'reload': ('native_max_abs_diff',),
    'noop': ('noop_max_abs_diff',),
    'fidelity': ('fidelity_weights_max_abs_diff', 'fidelity_outputs_max_abs_diff'),
    'parity': ('parity_max_abs_diff', 'parity_cosine'),
    'drift': ('drift_cosine', 'drift_top1_agreement'),
}


def fidelity_failures(figures: Any, tol: Tolerances) -> list[tuple[str, str]]:
    """(``fidelity``, why) if the loaded or computed values differ from the harness's resample; ``figures`` is
    any object with the fidelity fields of a :class:`CaseResult`."""
    failures = []
    if _above(figures.fidelity_weights_max_abs_diff, tol.fidelity_weights_atol):
        failures.append(('fidelity', f'{figures.fidelity_worst_tensor} differs from the harness resample by '
                                     f'{figures.fidelity_weights_max_abs_diff:.3g} > {tol.fidelity_weights_atol:g}'))
    if _above(figures.fidelity_outputs_max_abs_diff, tol.fidelity_outputs_atol):
        failures.append(('fidelity', f'outputs differ from a model computing the harness resample by '
                                     f'{figures.fidelity_outputs_max_abs_diff:.3g} > {tol.fidelity_outputs_atol:g}'))
    return failures


def failed_checks(result: CaseResult, tol: Tolerances) -> list[tuple[str, str]]:
    """(check, why) for every check whose figures are outside tolerance or not finite, in stage order."""
    failures = _load_failures(result)
    if _above(result.native_max_abs_diff, tol.reload_atol):
        failures.append(('reload', f'weights loaded into the configuration they were saved from differ from the '
                                   f'checkpoint by {result.native_max_abs_diff:.3g} > {tol.reload_atol:g} '
                                   f'({result.native_worst_tensor})'))
    if result.resize_error:
        failures.append(('resize', _one_line(result.resize_error)))
    if result.dtype_changes:
        failures.append(('dtype', f'the resize changed dtypes or devices: {"; ".join(result.dtype_changes)}'))
    if result.trainable_changes:
        failures.append(('trainable', f'the resize changed what trains: {"; ".join(result.trainable_changes)}'))
    if result.shape_errors:
        failures.append(('shapes', '; '.join(result.shape_errors)))
    if result.feature_errors:
        failures.append(('features', f'feature_info does not describe the maps: {"; ".join(result.feature_errors)}'))
    if result.nonfinite_outputs:
        failures.append(('finite', f'{" and ".join(result.nonfinite_outputs)} hold NaN or Inf'))
    noop_changes = result.noop_changes + ([f'outputs moved by {result.noop_max_abs_diff:.3g} > {tol.noop_atol:g}']
                                          if _above(result.noop_max_abs_diff, tol.noop_atol) else [])
    if noop_changes:
        failures.append(('noop', f"set_input_size to the model's own size changed it: {'; '.join(noop_changes)}"))
    failures += fidelity_failures(result, tol)
    if result.parity_note is None and not any(check == 'fidelity' for check, _ in failures):
        failures += _parity_failures(result, tol)
    if _below(result.drift_cosine, tol.drift_min_cosine) or _below(result.drift_top1_agreement, tol.drift_min_top1):
        failures.append(('drift', f'pooled-feature cosine {result.drift_cosine:.4f}, '
                                  f'top-1 agreement {result.drift_top1_agreement:.2f} vs the native size'))
    judged = {check for check, _ in failures}
    for check, fields in FIGURES.items():
        if check == 'parity' and result.parity_note is not None:
            continue
        bad = [f for f in fields if not _finite(getattr(result, f))]
        if bad and check not in judged:
            failures.append((check, f'{", ".join(bad)} is {getattr(result, bad[0])}'))
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
    if result.parity_note is None and result.parity_max_abs_diff is not None \
            and any(check == 'fidelity' for check, _ in failures):
        result.parity_note = f'not judged: the {result.path} path fails fidelity'
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
    ran = ['load (native size)']
    if result.native_max_abs_diff is not None:
        ran.append('reload')
    ran.append('finite (native size)')
    if result.noop_max_abs_diff is not None:
        ran.append('noop')
    return ran


def _load_failures(result: CaseResult) -> list[tuple[str, str]]:
    if result.load_error:
        return [('load', _one_line(result.load_error))]
    if result.missing_keys:
        return [('load', f'missing keys: {", ".join(result.missing_keys[:5])}')]
    return []


def _parity_failures(result: CaseResult, tol: Tolerances) -> list[tuple[str, str]]:
    if _above(result.parity_max_abs_diff, tol.parity_atol) or _below(result.parity_cosine, tol.parity_min_cosine):
        return [('parity', f'outputs differ from the create path by {result.parity_max_abs_diff:.3g} '
                           f'(cosine {result.parity_cosine:.9f}; limits {tol.parity_atol:g}, '
                           f'{tol.parity_min_cosine:.9g})')]
    return []


def _one_line(text: str, lines: int = 3) -> str:
    return ' '.join(line.strip() for line in text.splitlines()[:lines])


def _listed(checks) -> str:
    return ', '.join(checks)


def _finite(value: float | None) -> bool:
    return value is None or math.isfinite(value)


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and not value <= limit   # NaN counts as above


def _below(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and not value >= limit
