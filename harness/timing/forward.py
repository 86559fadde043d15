"""Forward-pass timing at a case's target size, as timm's benchmark.py times inference.

As there: ``torch.inference_mode``, cuDNN autotuning on, optionally channels-last and ``torch.compile``, and a
reduced dtype applied either by autocast (``amp``, benchmark.py ``--amp --amp-dtype``) or by casting weights
and inputs (``cast``, benchmark.py ``--precision``). Warm-up passes first (cuDNN autotuning, allocator growth,
lazy init; compiling comes before them and is not counted), then timed passes until the case's time budget is
spent or the median is known precisely enough, but never fewer than ``min_repeats``: a fixed count would spend
~30 s on one slow CPU case and milliseconds on a fast GPU one. On CUDA each pass is timed with CUDA events
between synchronisations; on CPU with ``perf_counter``. A batch that runs out of memory is halved until one
fits.

Every pass is kept (later statistics, such as a rank test between releases, need the samples), and the
summary is the median and inter-quartile range rather than the mean: a single preempted pass must not move
the figure. The coefficient of variation (std / mean) is recorded beside them and says whether the case's
passes were steady (``max_cv``); it does not end timing early, since one outlier would then cost a case its
whole budget.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from harness import faults
from harness.timing.config import TimingConfig

TORCH_DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}
CUDNN_BENCHMARK = True   # what the timed passes run with (benchmark.py's setting); run.json records it


@dataclass(frozen=True)
class Timing:
    """Every timed pass of one case, and the figures the report shows, derived from them."""
    samples_ms: tuple[float, ...]   # one per timed pass, in the order they ran
    batch_size: int                 # as configured
    budget_s: float                 # what warm-up and timed passes were allowed together
    median_rse: float               # the median's relative standard error that would end timing early (0: none)
    max_cv: float                   # passes that vary more than this (std / mean) are not stable
    batch_size_used: int            # batch_size, halved until a pass fitted in memory
    peak_memory_mb: float | None    # CUDA only: torch's allocator peak; CPU has no per-model equivalent
    load_average: tuple[float | None, float | None] = (None, None)   # the machine's, as timing started and ended

    @property
    def repeats(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def iqr_ms(self) -> float:
        return _iqr(self.samples_ms) if self.repeats >= 2 else 0.0

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    def percentile_ms(self, q: int) -> float:
        """The q-th percentile (1 <= q <= 99), interpolated linearly between the closest ranks (numpy's default)."""
        if self.repeats < 2:
            return self.samples_ms[0]
        return statistics.quantiles(self.samples_ms, n=100, method='inclusive')[q - 1]

    @property
    def cv(self) -> float:
        """Sample standard deviation over mean (0 for a single pass)."""
        return statistics.stdev(self.samples_ms) / statistics.fmean(self.samples_ms) if self.repeats >= 2 else 0.0

    @property
    def stable(self) -> bool:
        return self.cv <= self.max_cv

    @property
    def images_per_s(self) -> float:
        return self.batch_size_used / (self.median_ms / 1000)


def load_average() -> float | None:
    """The machine's 1-minute load average (runnable processes, averaged), None where the system has none.
    Above the number of cores, other work was waiting for a core: timings then run slow and vary."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def cpu_cores() -> int:
    """The cores this process may run on (its affinity), which a load average is compared with."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def use_threads(config: TimingConfig) -> None:
    """torch's intra-op threads in this process as ``config`` (resolved for the device) sets them."""
    if config.threads:
        torch.set_num_threads(config.threads)


def time_forward(model: nn.Module, img_size: tuple[int, int], config: TimingConfig, device: torch.device) -> Timing:
    """Time ``model`` on a batch at ``img_size``: ``config.warmup`` passes, then timed passes while another
    one still fits in ``config.budget_s`` (counted from the first warm-up pass) and the median is less precise
    than ``config.median_rse``; at least ``min_repeats``. A batch that runs out of memory is halved and timed
    afresh; out of memory at batch 1 is raised.

    ``cast`` and ``channels_last`` convert ``model`` in place: timing must be the model's last use."""
    config = config.for_device(device.type)
    forward_model = prepared(model, config)
    batch_size = config.batch_size
    load_at_start = load_average()
    with torch.inference_mode(), cudnn_benchmark():
        while True:
            try:
                samples_ms, peak = _timed_passes(forward_model, _inputs(batch_size, img_size, config, device),
                                                 config, device)
                return Timing(tuple(samples_ms), config.batch_size, config.budget_s, config.median_rse,
                              config.max_cv, batch_size, peak, (load_at_start, load_average()))
            except Exception as e:   # noqa: BLE001 - out of memory is retried at a smaller batch, anything else raised
                if batch_size == 1 or not faults.is_out_of_memory(e):
                    raise
            batch_size //= 2   # outside the handler: the error's frames, and the tensors they hold, are gone
            if device.type == 'cuda':
                torch.cuda.empty_cache()


def prepared(model: nn.Module, config: TimingConfig) -> nn.Module:
    """The model as timed: cast to the dtype (``cast``), channels-last, compiled."""
    if config.precision == 'cast':
        model.to(dtype=TORCH_DTYPES[config.dtype])
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    return torch.compile(model) if config.compile else model


def _inputs(batch_size: int, img_size: tuple[int, int], config: TimingConfig, device: torch.device) -> torch.Tensor:
    dtype = TORCH_DTYPES[config.dtype] if config.precision == 'cast' else torch.float32
    inputs = torch.randn(batch_size, 3, *img_size, device=device, dtype=dtype)
    return inputs.contiguous(memory_format=torch.channels_last) if config.channels_last else inputs


@contextlib.contextmanager
def cudnn_benchmark() -> Iterator[None]:
    """cuDNN picks the fastest convolution algorithm for each shape (during warm-up), as benchmark.py lets it."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _timed_passes(model: nn.Module, inputs: torch.Tensor, config: TimingConfig,
                  device: torch.device) -> tuple[list[float], float | None]:
    """The timed passes (ms) and the allocator's peak (MB, CUDA) over warm-up and timed passes."""
    autocast = TORCH_DTYPES[config.dtype] if config.precision == 'amp' and config.dtype != 'fp32' else None

    def forward() -> None:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            model(inputs)

    if config.compile:   # the first call compiles: before the budget's clock starts
        forward()
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    started_s = time.perf_counter()
    for _ in range(config.warmup):
        forward()
    _synchronize(device)
    timed_from_s = time.perf_counter()
    samples_ms: list[float] = []
    while len(samples_ms) < config.min_repeats or (
            not _precise_enough(samples_ms, config.median_rse)
            and _another_pass_fits(started_s, timed_from_s, len(samples_ms), config.budget_s)):
        samples_ms.append(_timed_ms(forward, device))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None
    return samples_ms, peak


def _precise_enough(samples_ms: list[float], median_rse: float) -> bool:
    return median_rse > 0 and median_relative_error(samples_ms) <= median_rse


def median_relative_error(samples_ms: list[float] | tuple[float, ...]) -> float:
    """The median's standard error over the median, estimated from the inter-quartile range as for a normal
    spread (sigma ~ IQR / 1.349; the median's standard error ~ 1.2533 sigma / sqrt(n)). Quartiles, not the
    standard deviation: one preempted pass must not keep a case timing until its budget is spent."""
    median = statistics.median(samples_ms) if samples_ms else 0.0
    if len(samples_ms) < 2 or median <= 0:
        return math.inf
    return 1.2533 * _iqr(samples_ms) / 1.349 / math.sqrt(len(samples_ms)) / median


def _iqr(samples_ms: list[float] | tuple[float, ...]) -> float:
    q1, _, q3 = statistics.quantiles(samples_ms, n=4, method='inclusive')
    return q3 - q1


def _another_pass_fits(started_s: float, timed_from_s: float, passes: int, budget_s: float) -> bool:
    """Whether one more pass, as long as the timed passes so far took on average (wall clock, synchronisation
    included), still ends within the budget. Predicting, not checking afterwards, keeps a case inside it."""
    now = time.perf_counter()
    per_pass_s = (now - timed_from_s) / max(passes, 1)
    return now + per_pass_s - started_s <= budget_s


def _synchronize(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _timed_ms(forward: Callable[[], None], device: torch.device) -> float:
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        forward()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    start_s = time.perf_counter()
    forward()
    return (time.perf_counter() - start_s) * 1000
