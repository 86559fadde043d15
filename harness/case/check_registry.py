"""One record per check, registered in the order the stages run it: its name, the figures it records and the limit
each is judged against, how it is judged, its columns in report.md, and how a repro script runs it.

Every consumer reads these records and nothing else: :mod:`harness.case.verdict` judges each check in order;
:mod:`harness.analysis.compare` calls a move in any check's figure (or a change in what it found) an outputs change;
report.md's drift and fidelity table shows the figures that have a column; :mod:`harness.repro.script` plans a
script from a check's repro facts; :data:`~harness.store.case_result.CHECKS` (the names a matrix's ``expect``
entries and a family's ``checks`` use) is the registry's names.

Adding a check: record its figures in the case stages (:mod:`harness.case.runner`, fields of
:class:`harness.store.case_result.CaseResult`), then register its judge here with :func:`register_check`, below
the check it runs after. A check whose figures need a limit adds that limit to :class:`harness.spec.model.Tolerances`
(and its noise floor, :mod:`harness.noise_floors`); a repro script runs it once :mod:`harness.repro.snippets` has
a snippet for it (without one, a script says it is not inlined and never passes).

No torch and no harness module at run time here: the pytest controller and the matrix validator read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# (figures, tolerances, the figure fields outside their limits) -> why the check fails, one line per failure
Judge = Callable[[Any, Any, tuple[str, ...]], list[str]]


@dataclass(frozen=True)
class Figure:
    """A number a check records (a :class:`~harness.store.case_result.CaseResult` field). NaN or infinite fails its
    check, limit or not."""
    field: str
    limit: str | None = None    # the Tolerances field it is judged against; None: recorded, judged only finite
    at_least: bool = False      # the limit is a minimum (cosines, agreement); else a maximum (differences)
    column: str | None = None   # report.md's drift and fidelity table: 'sci' or a format spec; None: CSV only
    header: str | None = None   # that column's header (None: the field's name)

    def outside(self, figures: Any, tol: Any) -> bool:
        """Whether the figure is beyond its limit in ``tol`` (NaN is; a figure or limit of None never is)."""
        value = getattr(figures, self.field)
        limit = getattr(tol, self.limit) if self.limit else None
        if value is None or limit is None:
            return False
        return not value >= limit if self.at_least else not value <= limit


@dataclass(frozen=True)
class Check:
    name: str
    judge: Judge
    figures: tuple[Figure, ...] = ()
    findings: tuple[str, ...] = ()       # list fields of what it found: a change between two runs is an outputs change
    note: str | None = None              # a field that, when set, says why its figures were recorded and not judged
    judged_after: tuple[str, ...] = ()   # checks that must hold for it to be judged (what it compares is wrong else)
    repro_built: bool = False            # a repro script checks it by building the path: no lines of its own
    weight_values: bool = False          # its figures depend on the weights' values: a repro's source must look trained

    def failures(self, figures: Any, tol: Any) -> list[tuple[str, str]]:
        """(name, why) for each way ``figures`` (any object with the check's fields) fail it against ``tol``."""
        outside = tuple(f.field for f in self.figures if f.outside(figures, tol))
        return [(self.name, why) for why in self.judge(figures, tol, outside)]


REGISTRY: dict[str, Check] = {}   # name -> check, in the order the stages run them


def register_check(name: str, **facts: Any) -> Callable[[Judge], Judge]:
    """Decorator: the judge of check ``name``, with the facts of :class:`Check` (figures, findings, ...)."""
    def register(judge: Judge) -> Judge:
        if name in REGISTRY:
            raise ValueError(f'check {name!r} is registered twice')
        REGISTRY[name] = Check(name, judge, **facts)
        return judge
    return register


def registered() -> tuple[Check, ...]:
    return tuple(REGISTRY.values())


def figure_fields() -> tuple[str, ...]:
    """Every check's figures, in check order."""
    return tuple(f.field for check in registered() for f in check.figures)


def finding_fields() -> tuple[str, ...]:
    return tuple(field for check in registered() for field in check.findings)


def one_line(text: str, lines: int = 3) -> str:
    return ' '.join(line.strip() for line in text.splitlines()[:lines])


# --- the checks, in stage order -------------------------------------------------------------------------------

@register_check('load', repro_built=True)
def _load(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    if r.load_error:
        return [one_line(r.load_error)]
    return [f'missing keys: {", ".join(r.missing_keys[:5])}'] if r.missing_keys else []


@register_check('reload', figures=(Figure('native_max_abs_diff', 'reload_atol'),), weight_values=True)
def _reload(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [f'weights loaded into the configuration they were saved from differ from the checkpoint by '
            f'{r.native_max_abs_diff:.3g} > {tol.reload_atol:g} ({r.native_worst_tensor})'] if outside else []


@register_check('resize', repro_built=True)
def _resize(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [one_line(r.resize_error)] if r.resize_error else []


@register_check('dtype', findings=('dtype_changes',))
def _dtype(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [f'the resize changed dtypes or devices: {"; ".join(r.dtype_changes)}'] if r.dtype_changes else []


@register_check('trainable', findings=('trainable_changes',))
def _trainable(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [f'the resize changed what trains: {"; ".join(r.trainable_changes)}'] if r.trainable_changes else []


@register_check('shapes')
def _shapes(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return ['; '.join(r.shape_errors)] if r.shape_errors else []


@register_check('features', findings=('feature_errors',))
def _features(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [f'feature_info does not describe the maps: {"; ".join(r.feature_errors)}'] if r.feature_errors else []


@register_check('finite', weight_values=True)
def _finite(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    return [f'{" and ".join(r.nonfinite_outputs)} hold NaN or Inf'] if r.nonfinite_outputs else []


@register_check('noop', figures=(Figure('noop_max_abs_diff', 'noop_atol'),), weight_values=True)
def _noop(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    changes = r.noop_changes + ([f'outputs moved by {r.noop_max_abs_diff:.3g} > {tol.noop_atol:g}'] if outside else [])
    return [f"set_input_size to the model's own size changed it: {'; '.join(changes)}"] if changes else []


@register_check('fidelity', weight_values=True, figures=(
    Figure('fidelity_weights_max_abs_diff', 'fidelity_weights_atol', column='sci'),
    Figure('fidelity_outputs_max_abs_diff', 'fidelity_outputs_atol', column='sci')))
def _fidelity(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    """The loaded or computed values against the harness's own resample."""
    why = []
    if 'fidelity_weights_max_abs_diff' in outside:
        why.append(f'{r.fidelity_worst_tensor} differs from the harness resample by '
                   f'{r.fidelity_weights_max_abs_diff:.3g} > {tol.fidelity_weights_atol:g}')
    if 'fidelity_outputs_max_abs_diff' in outside:
        why.append(f'outputs differ from a model computing the harness resample by '
                   f'{r.fidelity_outputs_max_abs_diff:.3g} > {tol.fidelity_outputs_atol:g}')
    return why


@register_check('parity', note='parity_note', judged_after=('fidelity',), weight_values=True, figures=(
    Figure('parity_max_abs_diff', 'parity_atol', column='sci'),
    Figure('parity_cosine', 'parity_min_cosine', at_least=True, column='.4f')))
def _parity(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    """Judged only between paths documented to compute the same model (``parity_note`` says why not), and only
    when the path reproduces the harness's resample: otherwise a difference says nothing about which is wrong."""
    return [f'outputs differ from the create path by {r.parity_max_abs_diff:.3g} (cosine {r.parity_cosine:.9f}; '
            f'limits {tol.parity_atol:g}, {tol.parity_min_cosine:.9g})'] if outside else []


@register_check('drift', weight_values=True, figures=(
    Figure('drift_cosine', 'drift_min_cosine', at_least=True, column='.4f', header='drift cosine (recorded)'),
    Figure('drift_top1_agreement', 'drift_min_top1', at_least=True, column='.4f',
           header='drift top-1 agreement (recorded)')))
def _drift(r: Any, tol: Any, outside: tuple[str, ...]) -> list[str]:
    """Recorded, not judged, unless the matrix sets a limit (they default to None)."""
    return [f'pooled-feature cosine {r.drift_cosine:.4f}, top-1 agreement {r.drift_top1_agreement:.2f} vs the '
            f'native size'] if outside else []
