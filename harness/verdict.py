"""Judge a case's recorded figures against the matrix tolerances and its expected-failure entry."""
from __future__ import annotations

from harness.matrix import Expectation, Tolerances
from harness.results import CaseResult


def failed_checks(result: CaseResult, tol: Tolerances) -> list[tuple[str, str]]:
    """(check, why) for every check whose figures are outside tolerance; figures left None are not judged."""
    failures = []
    if result.load_error:
        failures.append(('load', ' '.join(line.strip() for line in result.load_error.splitlines()[:3])))
    elif result.missing_keys:
        failures.append(('load', f'missing keys: {", ".join(result.missing_keys[:5])}'))
    elif _above(result.native_max_abs_diff, tol.fidelity_weights_atol):
        failures.append(('load', f'weights loaded at the native size differ from the checkpoint by '
                                 f'{result.native_max_abs_diff:.3g} ({result.native_worst_tensor})'))
    if result.shape_errors:
        failures.append(('shapes', '; '.join(result.shape_errors)))
    if _above(result.fidelity_weights_max_abs_diff, tol.fidelity_weights_atol):
        failures.append(('fidelity', f'{result.fidelity_worst_tensor} differs from the harness resample by '
                                     f'{result.fidelity_weights_max_abs_diff:.3g} > {tol.fidelity_weights_atol:g}'))
    if _above(result.fidelity_outputs_max_abs_diff, tol.fidelity_outputs_atol):
        failures.append(('fidelity', f'outputs differ from a model carrying the harness resample by '
                                     f'{result.fidelity_outputs_max_abs_diff:.3g} > {tol.fidelity_outputs_atol:g}'))
    if _above(result.parity_max_abs_diff, tol.parity_atol) or _below(result.parity_cosine, tol.parity_min_cosine):
        failures.append(('parity', f'outputs differ from the create path by {result.parity_max_abs_diff:.3g} '
                                   f'(cosine {result.parity_cosine:.6f})'))
    if _below(result.drift_cosine, tol.drift_min_cosine) or _below(result.drift_top1_agreement, tol.drift_min_top1):
        failures.append(('drift', f'pooled-feature cosine {result.drift_cosine:.4f}, '
                                  f'top-1 agreement {result.drift_top1_agreement:.2f} vs the native size'))
    return failures


def judge(result: CaseResult, tol: Tolerances, expectation: Expectation | None) -> None:
    """Set status, reason and failed_checks on a result whose checks ran."""
    failures = failed_checks(result, tol)
    result.failed_checks = list(dict.fromkeys(check for check, _ in failures))
    why = '; '.join(f'{check}: {detail}' for check, detail in failures)
    if expectation is None:
        result.status, result.reason = ('failed', why) if failures else ('passed', '')
    elif failures:
        result.status, result.reason = 'xfailed', f'{expectation.reason} [{why}]'
    else:
        result.status, result.reason = 'xpassed', f'expected to fail ({expectation.reason}) but passed'


def _above(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and not value <= limit   # NaN counts as above


def _below(value: float | None, limit: float | None) -> bool:
    return value is not None and limit is not None and not value >= limit
