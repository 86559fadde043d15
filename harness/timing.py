"""Forward-pass timing at a case's target size, in the spirit of timm's benchmark.py.

Warm-up passes first (cuDNN autotuning, allocator growth, lazy init), then ``repeats`` timed passes. On
CUDA each pass is timed with CUDA events between synchronisations; on CPU with ``perf_counter``. We report
the median and inter-quartile range rather than the mean: a single preempted pass must not move the figure.
"""
from __future__ import annotations

import contextlib
import fcntl
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from harness.matrix import TimingConfig

AUTOCAST_DTYPES = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


@dataclass(frozen=True)
class Timing:
    median_ms: float
    iqr_ms: float
    min_ms: float
    images_per_s: float
    peak_memory_mb: float | None   # CUDA only: torch's allocator peak; CPU has no per-model equivalent
    repeats: int


@torch.no_grad()
def time_forward(model: nn.Module, img_size: tuple[int, int], config: TimingConfig, device: torch.device) -> Timing:
    inputs = torch.randn(config.batch_size, 3, *img_size, device=device)
    autocast = AUTOCAST_DTYPES[config.dtype]

    def forward() -> None:
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            model(inputs)

    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(config.warmup):
        forward()
    times_ms = [_timed_ms(forward, device) for _ in range(config.repeats)]
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else None
    median = statistics.median(times_ms)
    return Timing(median_ms=median, iqr_ms=_iqr(times_ms), min_ms=min(times_ms),
                  images_per_s=config.batch_size / (median / 1000), peak_memory_mb=peak, repeats=config.repeats)


def _timed_ms(forward, device: torch.device) -> float:
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


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(values, n=4, method='inclusive')
    return q3 - q1


@contextlib.contextmanager
def device_lock(lock_dir: Path, device: torch.device, exclusive: bool) -> Iterator[None]:
    """Keep timing alone on a device while xdist workers share it.

    Checks take the device lock shared, timing takes it exclusive. File locks do not prefer writers, so a
    steady stream of checks could starve timing: a gate lock fixes that. Timing holds the gate while it waits,
    and checks pass through the gate before taking their shared lock, so none start while timing waits.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    name = str(device).replace(':', '-')
    with open(lock_dir / f'{name}.gate', 'a') as gate, open(lock_dir / f'{name}.lock', 'a') as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if exclusive:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)
