"""Forward-pass timing at a case's target size, in the spirit of timm's benchmark.py.

Warm-up passes first (cuDNN autotuning, allocator growth, lazy init), then timed passes until the case's time
budget is spent or the median is known precisely enough, but never fewer than ``min_repeats``: a fixed count
would spend ~30 s on one slow CPU case and milliseconds on a fast GPU one. On CUDA each pass is timed with
CUDA events between synchronisations; on CPU with ``perf_counter``. Every pass is kept (later statistics, such as a rank test between releases, need
the samples), and the summary is the median and inter-quartile range rather than the mean: a single preempted
pass must not move the figure.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from harness.matrix import TimingConfig

AUTOCAST_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass(frozen=True)
class Timing:
    """Every timed pass of one case, and the figures the report shows, derived from them."""
    samples_ms: tuple[float, ...]   # one per timed pass, in the order they ran
    batch_size: int
    budget_s: float                 # what warm-up and timed passes were allowed together
    precision: float                # the median's relative standard error that would end timing early (0: none)
    peak_memory_mb: float | None    # CUDA only: torch's allocator peak; CPU has no per-model equivalent

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

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.median_ms / 1000)


@torch.no_grad()
def time_forward(model: nn.Module, img_size: tuple[int, int], config: TimingConfig, device: torch.device) -> Timing:
    """Time ``model`` on a batch at ``img_size``: ``config.warmup`` passes, then timed passes while another
    one still fits in ``config.budget_s`` (counted from the first warm-up pass) and the median is less precise
    than ``config.precision``; at least ``min_repeats``."""
    config = config.for_device(device.type)
    inputs = torch.randn(config.batch_size, 3, *img_size, device=device)
    autocast = AUTOCAST_DTYPES[config.dtype]

    def forward() -> None:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            model(inputs)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    started_s = time.perf_counter()
    for _ in range(config.warmup):
        forward()
    _synchronize(device)
    timed_from_s = time.perf_counter()
    samples_ms: list[float] = []
    while len(samples_ms) < config.min_repeats or (
            not _precise_enough(samples_ms, config.precision)
            and _another_pass_fits(started_s, timed_from_s, len(samples_ms), config.budget_s)):
        samples_ms.append(_timed_ms(forward, device))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None
    return Timing(tuple(samples_ms), config.batch_size, config.budget_s, config.precision, peak)


def _precise_enough(samples_ms: list[float], precision: float) -> bool:
    return precision > 0 and median_relative_error(samples_ms) <= precision


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
