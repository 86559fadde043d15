"""A matrix as plain data: the dataclasses :mod:`harness.matrix` validates a YAML file into, and that cases,
families and the pipeline read. Imports neither torch nor timm, nor the validator: every module that reads a
matrix may import this one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import SpecifierSet

from harness.results import DEFAULT_STATE, PATHS

AXES = ('origins', 'sizes', 'patch_sizes', 'window_sizes', 'paths', 'states')   # a model entry may set its own

Size = tuple[int, int]
Window = int | Size   # a window size: square (int) or rectangular (h, w)


@dataclass(frozen=True)
class ModelSpec:
    """A timm model name plus constructor overrides that describe the checkpoint's own configuration.

    ``axes`` holds the case axes (origins, sizes, ...) a model entry sets for itself, replacing the matrix's.
    """
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()
    axes: tuple[tuple[str, Any], ...] = ()
    alias: str | None = None   # the entry's `label`: needed when one timm name appears twice

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


# what a timing setting left unset in the matrix and on the command line becomes, per device type
# CPU time is scarce (a ViT-B pass at 384 takes about a second on 2 cores): timing stops once the median is known
# to 2%, and the budget is a cap that leaves room for the floor of timed passes. GPU passes take milliseconds:
# the budget is filled, and the many samples make comparisons between releases sharper.
# threads: torch's intra-op threads in each worker. One on CPU: a pass on 2 threads of a shared 2-core machine
# waits for whichever core is busy (benchmarks/threads.py; README: Timing); on CUDA torch's own default
DEVICE_TIMING_DEFAULTS = {'cpu': {'batch_size': 1, 'budget_s': 10.0, 'median_rse': 0.02, 'threads': 1},
                          'cuda': {'batch_size': 8, 'budget_s': 5.0, 'median_rse': 0.0}}


@dataclass(frozen=True)
class TimingConfig:
    """How forward passes are timed. ``None`` means the device's default (:data:`DEVICE_TIMING_DEFAULTS`):
    a CPU pass is orders of magnitude slower than a GPU one, so it gets a smaller batch.

    A case gets ``budget_s`` seconds for its warm-up and timed passes together: timed passes go on while
    another one fits, so a fast model gets many samples and a slow one is not timed for minutes, and stop
    earlier once the median's relative standard error is at most ``median_rse`` (0: fill the budget). The
    ``min_repeats`` floor wins over both. ``precision`` says how a reduced ``dtype`` is applied: ``amp``
    (autocast) or ``cast`` (weights and inputs converted, as timm's benchmark.py ``--precision``)."""
    enabled: bool = True
    batch_size: int | None = None
    dtype: str = 'fp32'
    precision: str = 'amp'
    compile: bool = False           # torch.compile, default mode; compiling is not timed
    channels_last: bool = False     # model and inputs in channels-last memory format
    warmup: int = 1
    budget_s: float | None = None   # seconds per case: warm-up and timed passes together
    min_repeats: int = 7            # fewer timed passes cannot reach p < 0.002 in a rank test (7 vs 7: 0.0006)
    median_rse: float | None = None # relative standard error of the median that ends timing early; 0: never
    max_cv: float = 0.05            # a case whose passes vary more (std / mean) is recorded as not stable
    threads: int | None = None      # torch.set_num_threads in each worker; None on CUDA: torch's default

    def for_run(self, device_type: str, enabled: bool = True, **overrides: Any) -> 'TimingConfig':
        """What a run times with: the command line's settings (``batch_size=``, ``dtype=``, ...; None keeps the
        matrix's) over the matrix's, then every value still unset filled in for ``device_type``."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **chosen, enabled=self.enabled and enabled).for_device(device_type)

    def for_device(self, device_type: str) -> 'TimingConfig':
        """This configuration with every unset value filled in for ``device_type``."""
        defaults = DEVICE_TIMING_DEFAULTS.get(device_type, DEVICE_TIMING_DEFAULTS['cpu'])
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})


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
                                     # a model cannot take (`targets:`), and why

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


