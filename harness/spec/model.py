"""A matrix as plain data: the dataclasses :mod:`harness.spec.matrix` validates a YAML file into, and that cases,
families and the pipeline read. Imports neither torch nor timm, nor the validator: every module that reads a
matrix may import this one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet

from harness.spec.vocabulary import PATHS, Size, Window
from harness.store.case_result import DEFAULT_STATE
from harness.timing.config import TimingConfig

AXES = ('origins', 'sizes', 'patch_sizes', 'window_sizes', 'paths', 'states')   # a model entry may set its own


@dataclass(frozen=True)
class ModelSpec:
    """A timm model name plus constructor overrides that describe the checkpoint's own configuration.

    ``axes`` holds the case axes (origins, sizes, ...) a model entry sets for itself, replacing the matrix's.
    """
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    axes: tuple[tuple[str, Any], ...] = ()
    alias: str | None = None   # the entry's `label`: needed when one timm name appears twice
    zoo: bool = False          # from a `zoo:` entry: its shard was chosen by architecture (Selection)

    @classmethod
    def of(cls, name: str, overrides: dict[str, Any]) -> 'ModelSpec':
        """The spec of ``name`` with plain ``overrides`` (lists and mappings frozen: specs key caches)."""
        return cls(name, tuple(sorted((k, _freeze(v)) for k, v in overrides.items())))

    @property
    def kwargs(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.overrides}

    @property
    def label(self) -> str:
        """How cases and reports name the model: the matrix entry's ``label``, else the timm name."""
        return self.alias or self.name


@dataclass(frozen=True)
class OriginSpec:
    """Where a case's checkpoint comes from: a synthesized layout, the hub, or a user's file."""
    name: str
    file: str | None = None          # only for the ``file`` origin
    num_classes: int | None = None   # class count stored in a user's file
    custom_load: bool = False        # a user's file that needs the model's own loader (.npz)


class Calibrated(float):
    """A tolerance left at its default: the multiple of its figure's measured noise floor on the case's path
    (:mod:`harness.noise_floors`), resolved by :meth:`Tolerances.for_path`. NaN until then, so a tolerance used
    unresolved fails every figure rather than passing one."""

    def __new__(cls):
        return super().__new__(cls, float('nan'))

    def __repr__(self) -> str:
        return 'calibrated'

    def __eq__(self, other):
        return isinstance(other, Calibrated)

    def __hash__(self):
        return hash('calibrated')


CALIBRATED = Calibrated()


@dataclass(frozen=True)
class Tolerances:
    """Limits the recorded figures are judged against; ``None`` means report only. A limit the matrix does not
    set is :data:`CALIBRATED`: a stated multiple of the noise a correct timm shows in that figure on that path
    (``harness/noise_floors.json``). ``per_path`` holds a matrix's limits for one path (``tolerances: per_path:
    {dynamic: {...}}``), which win over its limits for every path; judge with :meth:`for_path`."""
    reload_atol: float | None = CALIBRATED
    fidelity_weights_atol: float | None = CALIBRATED
    fidelity_outputs_atol: float | None = CALIBRATED
    parity_atol: float | None = CALIBRATED
    parity_min_cosine: float | None = CALIBRATED
    noop_atol: float | None = CALIBRATED   # set_input_size to the model's own size: outputs must not move
    drift_min_cosine: float | None = None
    drift_min_top1: float | None = None
    per_path: tuple[tuple[str, tuple[tuple[str, float | None], ...]], ...] = ()

    def for_path(self, path: str, device_type: str = 'cpu') -> 'Tolerances':
        """The limits a case of ``path`` checked on ``device_type`` is judged against: the matrix's for that
        path, else its for every path, else the calibrated default for the path and device type."""
        from harness.noise_floors import default_tolerances
        defaults = default_tolerances(path, device_type)
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'per_path'}
        values.update({name: defaults[name] for name, value in values.items() if isinstance(value, Calibrated)})
        values.update(dict(self.per_path).get(path, ()))
        return Tolerances(**values)


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 1 <= K <= N, as (K, N)."""
    index, _, count = text.partition('/')
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f'expected K/N with 1 <= K <= N, such as 2/4; got {text!r}')
    return int(index), int(count)


@dataclass(frozen=True)
class Selection:
    """Which part of a matrix a run takes, and how (``harness run --shard K/N --full-size``).

    A shard holds every N-th checkpoint of the matrix's cases (:func:`harness.spec.cases.in_shard`), and of a ``zoo:``
    entry every N-th architecture, counted from the K-th: only those are validated, so a zoo sweep of a whole
    release is never built by one process. ``names``: only the entries of these timm models (``harness repro``
    looks for one case).
    ``full_size``: ``zoo:`` entries at their real configuration instead of in miniature."""
    shard: tuple[int, int] | None = None
    full_size: bool = False
    names: tuple[str, ...] | None = None

    def deals(self, index: int) -> bool:
        """Whether the ``index``-th item dealt round-robin (0-based) is in this shard."""
        return self.shard is None or index % self.shard[1] == self.shard[0] - 1

    def names_hold(self, name: str) -> bool:
        return self.names is None or name in self.names

    @classmethod
    def of_run(cls, shard: str, full_size: bool) -> 'Selection':
        """The selection a run.json records (``shard`` as ``K/N``, '' for the whole matrix)."""
        return cls(parse_shard(shard) if shard else None, full_size)


@dataclass(frozen=True)
class Expectation:
    """A known failure: cases that match every given field are expected to fail ``checks``, for ``reason``.

    Naming the checks keeps an entry from hiding a new failure: a matching case that fails a check the entry
    does not list is ``failed``, not ``xfailed``.
    """
    match: tuple[tuple[str, Any], ...]
    reason: str
    checks: tuple[str, ...]
    timm: SpecifierSet | None = None   # only for these timm releases

    def matches(self, fields: dict[str, Any], timm_version: str) -> bool:
        if self.timm is not None and not self.timm.contains(timm_version, prereleases=True):
            return False
        return all(fields.get(k) == v for k, v in self.match)


@dataclass(frozen=True)
class Matrix:
    name: str
    path: str
    models: tuple[ModelSpec, ...]
    origins: tuple[OriginSpec, ...]
    sizes: tuple[Size, ...]
    patch_sizes: tuple[int | None, ...] = (None,)
    window_sizes: tuple[Window | None, ...] = (None,)
    paths: tuple[str, ...] = PATHS
    states: tuple[str, ...] = (DEFAULT_STATE,)
    seed: int = 0
    num_images: int = 4
    images: str | None = None    # labelled images for top-1 accuracy with real weights (harness.image_tree)
    tolerances: Tolerances = field(default_factory=Tolerances)
    timing: TimingConfig = field(default_factory=TimingConfig)
    expect: tuple[Expectation, ...] = ()
    left_out: tuple[str, ...] = ()   # model entries whose `timm:` range leaves out this release, trigger kinds
                                     # a model cannot take (`targets:`), zoo architectures that do not run, and why
    selection: Selection = field(default_factory=lambda: Selection())   # the part of the file this is

    def axes_for(self, model: ModelSpec) -> dict[str, tuple]:
        """The case axes of one model: the matrix's, with the model entry's own lists taking precedence."""
        axes = {key: getattr(self, key) for key in AXES}
        return {**axes, **dict(model.axes)}


class _FrozenMapping(tuple):
    """A mapping-valued override (e.g. pretrained_cfg_overlay) as sorted items, so specs stay hashable."""


def _freeze(value: Any) -> Any:
    """Lists become tuples and mappings _FrozenMapping, so specs stay hashable (model overrides key caches)."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return _FrozenMapping(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, _FrozenMapping):
        return {k: _thaw(v) for k, v in value}
    return value


