"""The zoo sweep: every architecture a family claims, each in miniature, through its family's trigger set.

A matrix entry ``{zoo: GLOB}`` (or ``harness run --zoo GLOB``) stands for every timm architecture whose name
matches. Each runs as its family asks (its paths, and ``targets: auto``: the trigger set of its family), but
shrunk: the family proposes overrides that cut depth, width and heads (``Family.miniatures``), and the first
one whose geometry keeps everything resizing depends on (patch, grid, prefix tokens, windows per stage, rope
and relative-position windows, feature strides: :func:`resize_facts`) is taken. A model the family cannot
shrink runs at its real configuration when that is small enough (:data:`ZOO_MAX_PARAMS`);
otherwise it is left out with the reason, as is an architecture no family claims. One that takes only its own
size gets one case, ``unsupported`` with the reason. ``full_size`` (``--full-size``) runs every architecture at
its real configuration, for a GPU runner.

Everything is decided from meta-device builds, per architecture, only for the architectures of the run's
shard: a whole release (1,371 architectures in timm 1.0.31) is never validated by one process.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from harness.families import Geometry, family_of, unclaimed_reason
from harness.families.base import Family, meta_model, native_geometry

# the most parameters a model without a miniature may have to run at its real configuration: 749 of timm
# 1.0.31's 794 CNNs; about 3 GB per worker at its peak (README: Zoo sweep)
ZOO_MAX_PARAMS = 200_000_000
# geometry fields a miniature may change: its widths and depths, which no resize reads
SHRUNK_FIELDS = ('embed_dim', 'num_features', 'stage_channels', 'stage_depths')


@dataclass(frozen=True)
class ZooChoice:
    """How the sweep runs one architecture: with ``overrides`` (empty: its real configuration), or not at all
    (``left_out`` says why). ``note`` says why a model that runs is not a miniature."""
    name: str
    overrides: dict[str, Any] | None
    left_out: str = ''
    note: str = ''


def zoo_choice(name: str, full_size: bool = False) -> ZooChoice:
    """How the zoo sweep runs the timm architecture ``name``."""
    from harness.spec.model import ModelSpec
    family = family_of(name)
    if family is None:
        return ZooChoice(name, None, left_out=f'no family claims it: {unclaimed_reason(name)}')
    why = family.unsupported(name)
    if why:
        return ZooChoice(name, {}, note=f'its cases are unsupported: {why}')
    if full_size:
        return ZooChoice(name, {}, note='--full-size')
    real = ModelSpec(name)
    tried = []
    for overrides in family.miniatures(meta_model(real)):
        problem = miniature_problem(family, real, overrides)
        if problem is None:
            return ZooChoice(name, overrides)
        tried.append(f'{overrides}: {problem}')
    why_real = '; '.join(tried) if tried else f'the {family.name} family does not shrink its models'
    params = parameter_count(real)
    if params > ZOO_MAX_PARAMS:
        return ZooChoice(name, None, left_out=f'{params / 1e6:.0f}M parameters at its real configuration, over the '
                                              f'{ZOO_MAX_PARAMS / 1e6:.0f}M the miniature sweep builds, and no '
                                              f'miniature ({why_real}); --full-size runs it')
    return ZooChoice(name, {}, note=f'real configuration ({params / 1e6:.1f}M parameters): {why_real}')


def miniature_problem(family: Family, real, overrides: dict[str, Any]) -> str | None:
    """Why ``overrides`` do not make a miniature of ``real`` (a :class:`~harness.spec.matrix.ModelSpec`), or None."""
    from harness.spec.model import ModelSpec
    small = ModelSpec.of(real.name, overrides)
    try:
        if family_of(small) is not family:
            return 'builds a model of another family'
        got = resize_facts(native_geometry(family, small))
    except Exception as e:   # noqa: BLE001 - any constructor complaint rules the miniature out
        return f'timm cannot build it: {type(e).__name__}: {str(e)[:120]}'
    want = resize_facts(native_geometry(family, real))
    changed = sorted(key for key in want if want[key] != got.get(key))
    return f'changes {", ".join(changed)}' if changed else None


def resize_facts(geometry: Geometry) -> dict[str, Any]:
    """The geometry as resizing reads it: widths and depths dropped, relative-position windows as the set of
    windows (a shallower model has fewer modules, each with a window the real one has too)."""
    facts = {k: v for k, v in dataclasses.asdict(geometry).items() if k not in SHRUNK_FIELDS}
    facts['rel_pos_windows'] = sorted({tuple(window) for _, window in geometry.rel_pos_windows})
    return facts


def parameter_count(model) -> int:
    """Parameters of a :class:`~harness.spec.matrix.ModelSpec`'s meta build (no memory spent)."""
    return sum(p.numel() for p in meta_model(model).parameters())


def zoo_sizes(name: str) -> list[list[int]]:
    """The one size a model with no trigger set is asked for: its own, half as wide again."""
    from harness.spec.model import ModelSpec
    family = family_of(name)
    height, width = native_geometry(family, ModelSpec(name)).img_size
    return [[height, width + width // 2]]
