"""A case's timing figures: its model timed under the run's timing lock, with the other models a worker holds
parked off the device, and the work figures (FLOPs, TFLOP/s, fraction of the device's peak) that follow.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.case.work import CheckpointWork
from harness.runtime.device_lock import timing_lock
from harness.spec.cases import Case
from harness.store.case_result import CaseResult
from harness.timing.device_peaks import peak_tflops
from harness.timing.flops import achieved_tflops, flops_per_image
from harness.timing.forward import Timing, cpu_cores, time_forward


def time_case(case: Case, model: nn.Module, work: CheckpointWork, result: CaseResult) -> None:
    """Time the case's model in one go and record its timing and work figures on ``result``."""
    options = work.options
    with timing_lock(options.out_dir, options.device, options.cache_dir, options.holder, options.say), \
            work.parked_while_timing(model):
        result.flops_per_image = flops_per_image(model, case.img_size, options.device)
        timing = time_forward(model, case.img_size, options.timing, options.device)
    record_timing(result, timing, [1] * timing.repeats)


def record_timing(result: CaseResult, timing: Timing, rounds: list[int]) -> None:
    """The result's timing fields from ``timing``, and the work figures from them and the result's
    ``flops_per_image``; ``rounds[i]`` is the round sample i was timed in (all 1 for a case timed in one go;
    ``harness ab`` interleaves rounds between two releases)."""
    result.time_median_ms, result.time_iqr_ms, result.time_min_ms = timing.median_ms, timing.iqr_ms, timing.min_ms
    result.time_p50_ms, result.time_p90_ms, result.time_p99_ms = (timing.percentile_ms(q) for q in (50, 90, 99))
    result.time_cv, result.timing_stable, result.timing_max_cv = timing.cv, timing.stable, timing.max_cv
    result.images_per_s, result.peak_memory_mb = timing.images_per_s, timing.peak_memory_mb
    result.batch_size, result.batch_size_used = timing.batch_size, timing.batch_size_used
    result.timing_repeats, result.timing_budget_s = timing.repeats, timing.budget_s
    result.timing_median_rse = timing.median_rse
    result.time_samples_ms, result.time_sample_rounds = list(timing.samples_ms), list(rounds)
    result.load_average_start, result.load_average_end = timing.load_average
    result.cpu_cores = cpu_cores()
    result.achieved_tflops = achieved_tflops(result.flops_per_image, timing.images_per_s)
    result.device_peak_tflops = peak_tflops(result.device_name, result.dtype,
                                            tf32=torch.get_float32_matmul_precision() != 'highest')
    result.peak_fraction = (result.achieved_tflops / result.device_peak_tflops
                            if result.achieved_tflops is not None and result.device_peak_tflops else None)
