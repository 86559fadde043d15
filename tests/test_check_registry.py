"""A check is one registration: the verdict judges it, compare compares it, report.md shows it and repro plans it
from its record in harness.case.check_registry, and every fact a record names exists."""
from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from harness.analysis import report
from harness.analysis.compare import moved_outputs
from harness.case.check_registry import REGISTRY, Figure, register_check, registered
from harness.case.verdict import failed_checks, judge
from harness.spec.matrix import Tolerances
from harness.store import case_result
from harness.store.case_result import CaseResult


def test_results_checks_are_the_registry_names_in_stage_order():
    assert case_result.CHECKS == tuple(REGISTRY) == ('load', 'reload', 'resize', 'dtype', 'trainable', 'shapes',
                                                 'features', 'finite', 'noop', 'fidelity', 'parity', 'drift')


def test_every_field_and_limit_a_check_names_exists():
    fields = {f.name for f in dataclasses.fields(CaseResult)}
    limits = {f.name for f in dataclasses.fields(Tolerances)}
    for check in registered():
        named = [f.field for f in check.figures] + list(check.findings) + ([check.note] if check.note else [])
        assert set(named) <= fields, check.name
        assert {f.limit for f in check.figures if f.limit} <= limits, check.name
        assert set(check.judged_after) < set(REGISTRY), check.name
        assert all(f.column in (None, 'sci') or format(0.5, f.column) for f in check.figures)


def test_a_check_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'parity' is registered twice"):
        register_check('parity')(lambda r, tol, outside: [])


@pytest.fixture
def toy_check():
    """A check on ``time_cv`` (a field no check uses) with a minimum, registered as a new check module would."""
    @register_check('toy', figures=(Figure('time_cv', 'toy_min', at_least=True, column='.3f', header='toy CV'),))
    def _toy(r, tol, outside):
        return [f'cv {r.time_cv} < {tol.toy_min}'] if outside else []
    yield REGISTRY['toy']
    del REGISTRY['toy']


def _result(**figures) -> CaseResult:
    return CaseResult('c', 'm', 'vit', 'timm', [64, 64], None, None, 'create', **figures)


def _limits(**extra):
    """The calibrated limits of the create path with ``extra`` beside them (a new check's limit)."""
    return type('Limits', (), {**dataclasses.asdict(Tolerances().for_path('create')), **extra})()


def test_a_registered_check_is_judged_after_the_others(toy_check):
    assert failed_checks(_result(time_cv=0.1), _limits(toy_min=0.5)) == [('toy', 'cv 0.1 < 0.5')]
    assert failed_checks(_result(time_cv=0.9), _limits(toy_min=0.5)) == []
    assert failed_checks(_result(time_cv=math.nan), _limits(toy_min=None)) == [('toy', 'time_cv is nan')]
    result = _result(time_cv=0.1, noop_max_abs_diff=1.0)
    judge(result, _limits(toy_min=0.5), None)
    assert (result.status, result.failed_checks) == ('failed', ['noop', 'toy'])


def test_a_registered_checks_figure_that_moved_is_an_outputs_change(toy_check):
    assert [m.split()[0] for m in moved_outputs({'time_cv': 0.1}, {'time_cv': 0.2}, 1e-5)] == ['time_cv']


def test_a_registered_checks_column_is_in_the_drift_and_fidelity_table(toy_check):
    view = report._view(pd.DataFrame([dataclasses.asdict(_result(time_cv=0.25))]))
    header, _, row = report._drift(view)[-1].splitlines()
    cells = dict(zip([c.strip() for c in header.split('|')], [c.strip() for c in row.split('|')]))
    assert (cells['toy CV'], cells['parity not judged']) == ('0.250', '—')
    assert list(cells).index('toy CV') > list(cells).index('parity_cosine')   # registered last, shown last


def test_a_repro_snippet_for_a_name_that_is_not_a_check_is_refused():
    from harness.repro.snippets import register_snippet
    with pytest.raises(ValueError, match="a snippet for 'relaod', which is not a check"):
        register_snippet('relaod')
