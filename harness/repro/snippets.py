"""The code a repro script runs per check: a registry keyed by (family, check), and the checks every family has.

A snippet is made from the case (:class:`ReproCase`) at generation time: the lines of the script's ``main()``
that run the check, with the case's figures written in as literals (grids, windows, tolerances), and the
functions those lines call, which the script carries (:mod:`harness.repro.inline`). The lines may use what
``main()`` has built by then (``reference``, ``native`` and ``outputs`` only when the snippet says it ``uses``
them: nothing is built for nothing):

* ``reference``: the timm state dict of the source checkpoint (what a correct loader recovers from the file);
* ``overlay``: the ``pretrained_cfg_overlay`` that points timm at the file;
* ``native``: the checkpoint loaded at its own configuration;
* ``model``: the case's model; ``inputs``, ``outputs``: the images at the target size, and the model's
  (features, logits, pre-logits) on them;
* ``MODEL``, ``SOURCE`` (the checkpoint's constructor overrides), ``SOURCE_SIZE``, ``TARGET_SIZE``.

:func:`register_snippet` adds one; a family's own (its fidelity oracle) lives in :mod:`harness.repro.oracles`,
one module per family, found as families are. A check without a snippet for the case's family falls back to
the family-independent one (``family=None``); a check with neither is said not to be inlined, never passed.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from harness.case.check_registry import REGISTRY
from harness.reference.patch_kernel import resample_patch_kernel
from harness.repro import steps
from harness.repro.case import ReproCase

BATCH = 2   # images per forward pass in a script (steps.images)


@dataclass(frozen=True)
class Snippet:
    lines: tuple[str, ...]                    # main()'s lines that run the check
    functions: tuple[Callable, ...] = ()      # what the lines call: carried into the script
    uses: tuple[str, ...] = ()                # of 'reference', 'native', 'model', 'outputs' (``inputs`` too)


SnippetMaker = Callable[[ReproCase], Snippet]
SNIPPETS: dict[tuple[str | None, str], SnippetMaker] = {}


def register_snippet(check: str, family: str | None = None) -> Callable[[SnippetMaker], SnippetMaker]:
    """Decorator: ``make(case)`` gives the snippet of ``check`` for ``family``'s cases (None: any family's)."""
    if check not in REGISTRY:
        raise ValueError(f'a snippet for {check!r}, which is not a check; expected one of {list(REGISTRY)}')

    def register(make: SnippetMaker) -> SnippetMaker:
        SNIPPETS[family, check] = make
        return make
    return register


def snippet_for(case: ReproCase, check: str) -> Snippet | None:
    """The check's snippet for the case, or None when no snippet covers its family."""
    _import_oracle_modules()
    make = SNIPPETS.get((case.family_name, check)) or SNIPPETS.get((None, check))
    return make(case) if make else None


@functools.lru_cache(maxsize=None)
def _import_oracle_modules() -> None:
    from harness.repro import oracles
    for module in pkgutil.iter_modules(oracles.__path__):
        importlib.import_module(f'{oracles.__name__}.{module.name}')


def kwargs_call(base: str, kwargs: dict[str, Any]) -> str:
    """``dict(SOURCE, img_size=(64, 512))``: ``base`` with ``kwargs`` on top, as a script spells it."""
    return f'dict({", ".join([base, *(f"{k}={literal(v)}" for k, v in kwargs.items())])})'


def create_path(case: ReproCase) -> str:
    """The expression that builds the case's target through ``create_model``."""
    return f'pretrained(MODEL, {kwargs_call("SOURCE", case.create_kwargs())}, overlay)'


def literal(value: Any) -> str:
    """``value`` as a script spells it, lists as tuples (JSON turned timm's tuples into lists)."""
    return repr(as_tuples(value))


def as_tuples(value: Any) -> Any:
    """``value`` with its lists (and their lists) as tuples."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def kernel_lines(case: ReproCase) -> tuple[list[str], tuple]:
    """``expected`` starts as the source checkpoint; its patch kernel resampled when the patch size changes
    (every family with a patch embedding shares this)."""
    lines = ['expected = dict(reference)   # the oracle: the harness\'s own resample of the source checkpoint']
    if case.computed.patch_size == case.source.patch_size:
        return lines, ()
    lines += ["kernel = 'patch_embed.proj.weight'",
              f'expected[kernel] = resample_patch_kernel(reference[kernel], {case.computed.patch_size}, '
              f'{case.interpolation!r}, {case.antialias})']
    return lines, (resample_patch_kernel,)


# --- the checks every family has -------------------------------------------------------------------------------
@register_snippet('shapes')
def _shapes(case: ReproCase) -> Snippet | None:
    if case.family is None:
        return None
    expected_geometry = case.family.expected_geometry(case.source, case.target)
    shapes = case.family.expected_shapes(expected_geometry, BATCH)
    expected = {name: tuple(shapes[name]) for name in ('forward_features', 'logits')}
    if case.family.stores_geometry and case.path != 'dynamic':   # dynamic stores nothing resized
        expected['grid_size'] = tuple(expected_geometry.grid_size)
    return Snippet((f'shapes = {expected!r}', 'check_shapes(model, outputs, shapes)'), (steps.check_shapes,),
                   uses=('outputs',))


@register_snippet('finite')
def _finite(case: ReproCase) -> Snippet:
    return Snippet(('check_finite(outputs)',), (steps.check_finite,), uses=('outputs',))


@register_snippet('reload')
def _reload(case: ReproCase) -> Snippet:
    return Snippet((f"check_weights('reload', native, reference, atol={case.tolerances.reload_atol!r})",),
                   (steps.check_weights,), uses=('native', 'reference'))


@register_snippet('noop')
def _noop(case: ReproCase) -> Snippet:
    return Snippet((f'check_noop(native, SOURCE_SIZE, atol={case.tolerances.noop_atol!r})',),
                   (steps.check_noop,), uses=('native',))


@register_snippet('parity')
def _parity(case: ReproCase) -> Snippet:
    tol = case.tolerances
    return Snippet(('# the create path on the same images',
                    f'create_logits = forward({create_path(case)}, inputs)[1]',
                    f'check_parity(outputs[1], create_logits, atol={tol.parity_atol!r}, '
                    f'min_cos={tol.parity_min_cosine!r})'), (steps.check_parity,), uses=('outputs',))


@register_snippet('drift')
def _drift(case: ReproCase) -> Snippet:
    tol = case.tolerances
    return Snippet(('native_outputs = forward(native, images(SOURCE_SIZE))   # the model at its own size',
                    f'check_drift(outputs[2], outputs[1], native_outputs, min_cos={tol.drift_min_cosine!r}, '
                    f'min_top1={tol.drift_min_top1!r})'), (steps.check_drift,),
                   uses=('native', 'outputs'))
