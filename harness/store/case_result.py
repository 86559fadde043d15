"""The record of one case (:class:`CaseResult`): what a case ran, how it was measured, its verdict and figures;
and the words its fields take (statuses, checks, dtypes, states). :func:`record_problem` says whether a record
read back from a file is one CaseResult could hold. The file that holds the records is :mod:`harness.results`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.case.check_registry import REGISTRY
from harness.store import schema

STATUSES = ('passed', 'failed', 'xfailed', 'xpassed', 'unsupported', 'error', 'resource')
UNEXPECTED = ('failed', 'xpassed', 'error', 'resource')   # statuses that make `harness run` exit 1
# names that may appear in a record's ``failed_checks``, in the order the stages run (harness.case.check_registry)
CHECKS = tuple(REGISTRY)
DTYPES = ('fp32', 'bf16', 'fp16')   # the timing dtypes
PRECISIONS = ('amp', 'cast')        # how a reduced dtype is applied: autocast, or weights and inputs cast to it
STATES = ('fp32', 'bf16', 'fp16', 'frozen', 'train')   # a model's state when resized (harness.states)
DEFAULT_STATE = 'fp32'
HELD = '; ran and held: '   # an unsupported case's reason: why, then this, then the checks that ran and held
UNSUPPORTED_PREFIX = 'unsupported: '   # how pytest's skip of an unsupported case starts (plugin, console)


@dataclass
class CaseResult:
    # identity of the case
    case_id: str
    matrix: str
    model: str
    origin: str
    img_size: list[int]
    patch_size: int | None
    window_size: int | list[int] | None      # an int (square) or [H, W]
    path: str
    state: str = 'fp32'                      # the state the model was resized in (harness.states)
    model_name: str = ''                                   # the timm name (``model`` is the matrix label)
    model_overrides: dict[str, Any] = field(default_factory=dict)   # constructor overrides of the checkpoint
    family: str = ''                         # the family claiming the model (harness.families); '' in older records
    source_img_size: list[int] | None = None
    source_patch_size: int | None = None
    source_window_size: int | list[int] | None = None   # the first stage's, as window_size
    # outcome
    status: str = 'error'
    reason: str = ''
    failed_checks: list[str] = field(default_factory=list)
    # how it was measured
    timm_version: str = ''
    torch_version: str = ''
    device: str = ''
    device_name: str = ''
    dtype: str = ''
    precision: str = ''                 # amp (autocast) or cast (weights and inputs in the dtype)
    compile: bool | None = None         # timed through torch.compile
    channels_last: bool | None = None   # timed in channels-last memory format
    batch_size: int | None = None       # as configured; batch_size_used says what fitted
    finished_at: str = ''
    duration_s: float | None = None
    # load
    load_error: str | None = None
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    resize_error: str | None = None             # what timm raised while resizing (set_input_size, create's resample)
    # reload: the checkpoint loaded into the exact configuration it was saved from, against its own tensors
    native_max_abs_diff: float | None = None
    native_worst_tensor: str | None = None
    reference_note: str | None = None           # hub, file: the tensors not read back from the file, and why
    # dtype and trainable: what the resize changed of the state the model was in (harness.states)
    dtype_changes: list[str] = field(default_factory=list)       # tensors whose dtype or device moved
    trainable_changes: list[str] = field(default_factory=list)   # requires_grad or training flags that moved
    # shapes
    shape_errors: list[str] = field(default_factory=list)
    # features: feature_info against what forward_intermediates returned at the case's size
    feature_errors: list[str] = field(default_factory=list)
    # finite
    nonfinite_outputs: list[str] = field(default_factory=list)   # outputs holding NaN or Inf
    # noop (set_input_size cases): set_input_size(img_size=<the model's own size>) must change nothing
    noop_max_abs_diff: float | None = None      # its outputs at the own size vs the model's before the call
    noop_changes: list[str] = field(default_factory=list)   # stored configuration it moved, or what it raised
    # fidelity
    fidelity_weights_max_abs_diff: float | None = None
    fidelity_worst_tensor: str | None = None
    fidelity_outputs_max_abs_diff: float | None = None
    # parity (against the `create` path)
    parity_max_abs_diff: float | None = None
    parity_cosine: float | None = None
    parity_note: str | None = None   # why parity is recorded but not judged (a documented difference, ...)
    # what the path's model computed, compact: compared between releases by `harness compare`
    output_fingerprint: dict[str, Any] | None = None
    # drift (target size vs native size)
    drift_cosine: float | None = None
    drift_top1_agreement: float | None = None
    # accuracy on the user's labelled images (--images), for real weights (hub, file) only; None otherwise
    accuracy_images: int | None = None           # how many images
    accuracy_top1_native: float | None = None    # the checkpoint's model at its own size
    accuracy_top1: float | None = None           # the path's model at the target size
    # timing
    time_median_ms: float | None = None
    time_iqr_ms: float | None = None
    time_min_ms: float | None = None
    time_p50_ms: float | None = None
    time_p90_ms: float | None = None
    time_p99_ms: float | None = None
    time_cv: float | None = None                       # standard deviation over mean of the timed passes
    timing_stable: bool | None = None                  # time_cv <= timing_max_cv
    timing_max_cv: float | None = None
    images_per_s: float | None = None
    batch_size_used: int | None = None                 # batch_size, halved until a pass fitted in memory
    peak_memory_mb: float | None = None
    timing_repeats: int | None = None                  # timed passes (at least the matrix's min_repeats)
    timing_budget_s: float | None = None               # seconds the case had for warm-up and timed passes
    timing_median_rse: float | None = None             # median's relative standard error that ends timing early
    time_samples_ms: list[float] | None = None         # every timed pass, in the order they ran
    time_sample_rounds: list[int] | None = None        # the timing round of each (harness ab alternates rounds)
    load_average_start: float | None = None            # the machine's 1-minute load average as timing started
    load_average_end: float | None = None              # and as it ended: above cpu_cores, other work waited
    cpu_cores: int | None = None                       # the cores the worker could run on
    # work: floating-point operations (a multiply-add counts 2) and how close to the device's peak they ran
    flops_per_image: int | None = None                 # one forward pass, counted by torch.utils.flop_counter
    achieved_tflops: float | None = None               # flops_per_image * images_per_s / 1e12
    device_peak_tflops: float | None = None            # datasheet dense peak for its dtype (timing.device_peaks)
    peak_fraction: float | None = None                 # achieved_tflops / device_peak_tflops
    # the record's layout (harness.store.schema): records of older harnesses are read through its upgrade steps
    schema: int = schema.RECORD.version

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=False)


def record_problem(record: dict[str, Any]) -> str | None:
    """The first field of a record that CaseResult could not hold, as ``<field>: expected <type>, got <value>``;
    None for a sound record. ``status`` must be one of :data:`STATUSES`. Fields a record lacks (older
    harnesses) and fields CaseResult lacks (newer ones) pass."""
    if record.get('status') not in STATUSES:
        got = json.dumps(record['status'])[:80] if 'status' in record else 'none'
        return f'status: expected one of {", ".join(STATUSES)}, got {got}'
    checks = _field_checks()
    for name, value in record.items():
        check = checks.get(name)
        if check is not None and not check[0](value):
            return f'{name}: expected {check[1]}, got {json.dumps(value)[:80]}'
    return None


@functools.cache
def _field_checks() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """CaseResult's fields: name -> (whether a JSON value fits its type, the type as declared)."""
    hints = typing.get_type_hints(CaseResult)
    return {f.name: (_check_of(hints[f.name]), str(f.type)) for f in dataclasses.fields(CaseResult)}


_EXACT_TYPES = {str: (str,), int: (int,), float: (int, float), bool: (bool,), type(None): (type(None),)}


def _check_of(hint: Any) -> Callable[[Any], bool]:
    """A fast test of whether a JSON value fits ``hint`` (an int fits a float; a bool is no number): built once
    per field, since a large results file has thousands of records with lists of hundreds of timings."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return lambda value: True
    if origin in (typing.Union, types.UnionType):   # plain arms by one set lookup, such as float | None
        plain = frozenset(kind for arm in args if arm in _EXACT_TYPES for kind in _EXACT_TYPES[arm])
        others = [_check_of(arm) for arm in args if arm not in _EXACT_TYPES]
        if not others:
            return lambda value: type(value) in plain
        return lambda value: type(value) in plain or any(arm(value) for arm in others)
    if origin is list and args[0] in _EXACT_TYPES:   # a list of timings: its items' types, counted in C
        exact = frozenset(_EXACT_TYPES[args[0]])
        return lambda value: type(value) is list and exact.issuperset(map(type, value))
    if origin is list:
        item = _check_of(args[0])
        return lambda value: type(value) is list and all(item(v) for v in value)
    if origin is dict:
        item = _check_of(args[1])
        return lambda value: type(value) is dict and all(item(v) for v in value.values())
    exact = frozenset(_EXACT_TYPES[hint])   # type(), not isinstance(): True is an int to isinstance
    return lambda value: type(value) in exact
