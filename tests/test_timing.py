"""Budgeted forward timing (harness.timing.forward), its matrix section and how the report states it.

Budget arithmetic is checked on a fake clock, where a pass takes exactly the time the test says, so the
counts are exact; the rest times a tiny module on the CPU for real.
"""
from __future__ import annotations

import dataclasses
import statistics
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import harness.timing.forward
from harness import faults
from harness.analysis.report import write_report
from harness.case.timed import record_timing
from harness.results import RESULTS_FILE, append_result
from harness.spec.matrix import MatrixError, load_matrix
from harness.store.case_result import CaseResult
from harness.timing.config import DEVICE_TIMING_DEFAULTS, TimingConfig
from harness.timing.flops import flops_per_image
from harness.timing.forward import median_relative_error, time_forward

CPU = torch.device('cpu')
SIZE = (16, 24)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()


class Recorder(nn.Module):
    """Records, for each pass, the inputs and the settings it ran under."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2))
        self.shapes: list[tuple[int, ...]] = []
        self.autocast: list[bool] = []
        self.inference_mode: list[bool] = []
        self.cudnn_benchmark: list[bool] = []
        self.dtypes: list[tuple[torch.dtype, torch.dtype]] = []   # (inputs, weights)
        self.channels_last: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.autocast.append(torch.is_autocast_enabled('cpu'))
        self.inference_mode.append(torch.is_inference_mode_enabled())
        self.cudnn_benchmark.append(torch.backends.cudnn.benchmark)
        self.dtypes.append((x.dtype, self.weight.dtype))
        self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x.mean()


class OutOfMemoryAbove(nn.Module):
    """Runs out of memory, as CUDA's allocator says so, on a batch larger than ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')
        return x.mean()


class FakeClock:
    def __init__(self):
        self.now_s = 0.0

    def perf_counter(self) -> float:
        return self.now_s


class FixedPass(nn.Module):
    """A forward pass that takes exactly ``pass_s`` seconds on the fake clock (or, given several, each in turn)."""

    def __init__(self, clock: FakeClock, pass_s: float, *more_pass_s: float):
        super().__init__()
        self.clock, self.cycle, self.passes = clock, (pass_s, *more_pass_s), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now_s += self.cycle[self.passes % len(self.cycle)]
        self.passes += 1
        return x


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(harness.timing.forward, 'time', SimpleNamespace(perf_counter=fake.perf_counter))
    return fake


def config(**kwargs) -> TimingConfig:
    """A timing configuration that fills its budget (median_rse 0) unless told otherwise."""
    return TimingConfig(**{'batch_size': 1, 'warmup': 1, 'budget_s': 0.0, 'median_rse': 0.0, **kwargs})


# --- the budget -------------------------------------------------------------------------------------------

def test_zero_budget_runs_exactly_min_repeats():
    timing = time_forward(tiny_model(), SIZE, config(budget_s=0.0, min_repeats=7), CPU)
    assert timing.repeats == len(timing.samples_ms) == 7
    assert timing.budget_s == 0.0
    assert all(ms > 0 for ms in timing.samples_ms)


def test_timing_records_the_machines_load_as_it_starts_and_ends(monkeypatch):
    loads = iter([(3.5, 1.0, 1.0), (7.25, 2.0, 1.0)])
    monkeypatch.setattr(harness.timing.forward.os, 'getloadavg', lambda: next(loads))
    timing = time_forward(tiny_model(), SIZE, config(min_repeats=2), CPU)
    assert timing.load_average == (3.5, 7.25)
    result = timed_case('create', list(timing.samples_ms), 0.0)
    record_timing(result, timing, [1] * timing.repeats)
    assert (result.load_average_start, result.load_average_end) == (3.5, 7.25) and result.cpu_cores >= 1


# --- threads ----------------------------------------------------------------------------------------------

def test_threads_default_to_one_on_cpu_and_follow_the_command_line():
    assert TimingConfig().for_run('cpu').threads == 1
    assert TimingConfig().for_run('cuda').threads is None            # torch's own default
    assert TimingConfig(threads=2).for_run('cpu').threads == 2       # the matrix's
    assert TimingConfig(threads=2).for_run('cpu', threads=3).threads == 3   # the command line's over it


def test_use_threads_sets_torchs_intra_op_threads():
    before = torch.get_num_threads()
    try:
        harness.timing.forward.use_threads(TimingConfig(threads=before + 1))
        assert torch.get_num_threads() == before + 1
        harness.timing.forward.use_threads(TimingConfig())                   # None: left as it is
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)


def test_budget_larger_than_needed_gives_more_samples():
    timing = time_forward(tiny_model(), SIZE, config(budget_s=0.5, min_repeats=7), CPU)
    assert timing.repeats == len(timing.samples_ms) > 7


def test_warmup_and_timed_passes_fill_the_budget_without_exceeding_it(clock):
    pass_s = 1 / 64                                # exact in binary, so the sums below are too
    model = FixedPass(clock, pass_s)
    timing = time_forward(model, SIZE, config(warmup=2, budget_s=10 * pass_s, min_repeats=3), CPU)
    assert model.passes == 10                      # 2 warm-up + 8 timed passes: exactly the budget
    assert timing.repeats == 8
    assert timing.samples_ms == (pass_s * 1000,) * 8
    assert clock.now_s == timing.budget_s


def test_min_repeats_wins_over_a_budget_too_small(clock):
    model = FixedPass(clock, pass_s=0.050)
    timing = time_forward(model, SIZE, config(warmup=1, budget_s=0.1, min_repeats=7), CPU)
    assert timing.repeats == 7 and model.passes == 8
    assert timing.budget_s == 0.1                  # recorded as set: the report flags the overrun


# --- median_rse: the median known well enough ends timing early --------------------------------------------

def test_steady_passes_stop_at_min_repeats_long_before_the_budget(clock):
    model = FixedPass(clock, 0.25)
    timing = time_forward(model, SIZE, config(warmup=1, budget_s=60.0, min_repeats=7, median_rse=0.02), CPU)
    assert timing.repeats == 7 and model.passes == 8
    assert clock.now_s == 2.0 and timing.median_rse == 0.02


def test_noisy_passes_go_on_until_the_budget(clock):
    model = FixedPass(clock, 0.010, 0.020)         # the median's error stays far above 2% for hundreds of passes
    timing = time_forward(model, SIZE, config(warmup=1, budget_s=1.0, min_repeats=7, median_rse=0.02), CPU)
    assert 1.0 - 0.020 < clock.now_s <= 1.0
    assert timing.repeats == model.passes - 1 > 60


def test_timing_stops_at_the_first_pass_that_makes_the_median_precise_enough(clock):
    model = FixedPass(clock, 0.100, 0.130)         # error ~ 0.24 / sqrt(n): under 2% after some 150 passes
    timing = time_forward(model, SIZE, config(warmup=0, budget_s=60.0, min_repeats=7, median_rse=0.02), CPU)
    samples = list(timing.samples_ms)
    assert median_relative_error(samples) <= 0.02
    assert all(median_relative_error(samples[:n]) > 0.02 for n in range(7, len(samples)))
    assert 100 < len(samples) and clock.now_s < 30.0


def test_median_relative_error_is_the_iqr_estimate_of_the_median_standard_error():
    samples = [10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0]
    q1, median, q3 = np.percentile(samples, [25, 50, 75])
    sigma = (q3 - q1) / 1.349                      # the IQR of a normal distribution is 1.349 sigma
    assert median_relative_error(samples) == pytest.approx(1.2533 * sigma / np.sqrt(len(samples)) / median)
    assert median_relative_error([5.0]) == float('inf')


def test_summary_figures_match_numpy_over_the_samples():
    timing = time_forward(tiny_model(), SIZE, config(batch_size=3, budget_s=0.05, min_repeats=9), CPU)
    samples = np.array(timing.samples_ms)
    q1, q3 = np.percentile(samples, [25, 75])
    assert timing.median_ms == pytest.approx(np.median(samples))
    assert timing.median_ms == statistics.median(timing.samples_ms)
    assert timing.iqr_ms == pytest.approx(q3 - q1)
    assert timing.min_ms == samples.min()
    assert [timing.percentile_ms(q) for q in (50, 90, 99)] == pytest.approx(np.percentile(samples, [50, 90, 99]))
    assert timing.cv == pytest.approx(np.std(samples, ddof=1) / np.mean(samples))
    assert timing.images_per_s == pytest.approx(3 / (np.median(samples) / 1000))
    assert timing.peak_memory_mb is None           # CPU


def test_timing_is_stable_while_the_passes_vary_at_most_max_cv(clock):
    steady = time_forward(FixedPass(clock, 0.010), SIZE, config(min_repeats=8), CPU)
    assert steady.cv == pytest.approx(0.0, abs=1e-12) and steady.stable
    noisy = time_forward(FixedPass(clock, 0.010, 0.012), SIZE, config(min_repeats=8), CPU)
    assert noisy.samples_ms == pytest.approx((12.0, 10.0) * 4)   # the warm-up took the first 10 ms pass
    assert noisy.cv == pytest.approx(np.std(noisy.samples_ms, ddof=1) / 11.0)   # 9.8%
    assert (noisy.max_cv, noisy.stable) == (0.05, False)
    assert time_forward(FixedPass(clock, 0.010, 0.012), SIZE, config(min_repeats=8, max_cv=0.1), CPU).stable


def test_times_the_target_size_at_the_device_default_batch():
    model = Recorder()
    timing = time_forward(model, SIZE, TimingConfig(warmup=2, budget_s=0.0, min_repeats=7), CPU)
    cpu_batch = DEVICE_TIMING_DEFAULTS['cpu']['batch_size']
    assert model.shapes == [(cpu_batch, 3, *SIZE)] * (2 + 7)
    assert timing.batch_size == cpu_batch


@pytest.mark.parametrize('dtype, autocast', [('fp32', False), ('bf16', True)])
def test_reduced_precision_runs_under_autocast(dtype, autocast):
    model = Recorder()
    time_forward(model, SIZE, config(dtype=dtype, min_repeats=1), CPU)
    assert model.autocast == [autocast] * 2
    assert model.dtypes == [(torch.float32, torch.float32)] * 2


@pytest.mark.parametrize('dtype, cast_to', [('bf16', torch.bfloat16), ('fp16', torch.float16),
                                            ('fp32', torch.float32)])
def test_cast_precision_converts_weights_and_inputs(dtype, cast_to):
    model = Recorder()
    time_forward(model, SIZE, config(dtype=dtype, precision='cast', min_repeats=1), CPU)
    assert model.dtypes == [(cast_to, cast_to)] * 2 and model.autocast == [False] * 2


def test_passes_run_in_inference_mode_with_cudnn_autotuning(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    model = Recorder()
    time_forward(model, SIZE, config(min_repeats=2), CPU)
    assert model.inference_mode == [True] * 3 and model.cudnn_benchmark == [True] * 3
    assert torch.backends.cudnn.benchmark is False   # as it was before timing
    assert model.channels_last == [False] * 3


def test_channels_last_inputs():
    model = Recorder()
    time_forward(model, SIZE, config(channels_last=True, min_repeats=1), CPU)
    assert model.channels_last == [True] * 2


def test_a_batch_out_of_memory_is_halved_until_one_fits():
    model = OutOfMemoryAbove(3)
    timing = time_forward(model, SIZE, config(batch_size=12, min_repeats=2), CPU)
    assert model.batches == [12, 6, 3, 3, 3]      # each size's warm-up pass, then two timed passes at 3
    assert (timing.batch_size, timing.batch_size_used) == (12, 3)
    assert timing.images_per_s == pytest.approx(3 / (timing.median_ms / 1000))


def test_out_of_memory_at_batch_one_is_raised_and_other_errors_at_once():
    model = OutOfMemoryAbove(0)
    with pytest.raises(torch.cuda.OutOfMemoryError) as info:
        time_forward(model, SIZE, config(batch_size=5), CPU)
    assert model.batches == [5, 2, 1]
    assert faults.is_out_of_memory(info.value)   # what makes run_case record the case as resource
    failing = FixedPass(FakeClock(), 'not a number')   # a TypeError, not a lack of memory: never retried
    with pytest.raises(TypeError):
        time_forward(failing, SIZE, config(batch_size=4), CPU)
    assert failing.passes == 0


@pytest.mark.parametrize('compiled', [False, True])
def test_tiny_model_timed_compiled_and_not(compiled, monkeypatch):
    """torch.compile in its default mode (the real one: inductor builds the kernels), compiling untimed."""
    compile_calls = []
    real_compile = torch.compile

    def spy(model, **options):
        compile_calls.append(options)
        return real_compile(model, **options)

    monkeypatch.setattr(torch, 'compile', spy)
    model = nn.Linear(24, 2).eval()
    result = CaseResult(case_id='c', matrix='m', model='linear', origin='-', img_size=list(SIZE), patch_size=None,
                        window_size=None, path='create', device_name='Test CPU', dtype='fp32',
                        flops_per_image=flops_per_image(model, SIZE, CPU))
    timing = time_forward(model, SIZE, config(batch_size=2, compile=compiled, min_repeats=5), CPU)
    record_timing(result, timing, [1] * timing.repeats)
    assert compile_calls == ([{}] if compiled else [])
    assert len(result.time_samples_ms) == 5 and all(ms > 0 for ms in result.time_samples_ms)
    assert [result.time_p50_ms, result.time_p90_ms, result.time_p99_ms] == pytest.approx(
        np.percentile(result.time_samples_ms, [50, 90, 99]))
    assert result.flops_per_image == 2 * 3 * 16 * 24 * 2
    assert result.achieved_tflops == pytest.approx(result.flops_per_image * 2 / (result.time_median_ms / 1000) / 1e12)


# --- defaults per device ----------------------------------------------------------------------------------

@pytest.mark.parametrize('device, batch_size, budget_s, median_rse', [('cpu', 1, 10.0, 0.02), ('cuda', 8, 5.0, 0.0)])
def test_for_device_fills_unset_values(device, batch_size, budget_s, median_rse):
    filled = TimingConfig(dtype='bf16', warmup=3, min_repeats=9).for_device(device)
    assert (filled.batch_size, filled.budget_s, filled.median_rse) == (batch_size, budget_s, median_rse)
    assert (filled.dtype, filled.warmup, filled.min_repeats) == ('bf16', 3, 9)


@pytest.mark.parametrize('device', ['cpu', 'cuda'])
def test_for_device_keeps_values_that_are_set(device):
    chosen = TimingConfig(batch_size=4, budget_s=0.0, median_rse=0.0, threads=3)   # 0 is a setting, not "unset"
    assert chosen.for_device(device) == chosen


# --- the matrix's timing section --------------------------------------------------------------------------

MINIMAL = """\
name: tiny
models: [vit_tiny_patch16_224]
origins: [timm]
sizes: [224]
"""


def test_timing_section_accepts_every_key(write_matrix):
    matrix = load_matrix(write_matrix(MINIMAL + 'timing: {enabled: false, batch_size: null, dtype: fp16, warmup: 0, '
                                                'budget_s: 1e1, min_repeats: 9, median_rse: 0.01, precision: cast, '
                                                'compile: true, channels_last: true, max_cv: 0.1, threads: 2}\n'))
    assert matrix.timing == TimingConfig(enabled=False, batch_size=None, dtype='fp16', warmup=0, budget_s=10.0,
                                         min_repeats=9, median_rse=0.01, precision='cast', compile=True,
                                         channels_last=True, max_cv=0.1, threads=2)
    assert {f.name for f in dataclasses.fields(TimingConfig)} == {
        'enabled', 'batch_size', 'dtype', 'warmup', 'budget_s', 'min_repeats', 'median_rse', 'precision', 'compile',
        'channels_last', 'max_cv', 'threads'}


def test_timing_section_absent_leaves_device_defaults(write_matrix):
    assert load_matrix(write_matrix(MINIMAL)).timing == TimingConfig()
    assert (TimingConfig().batch_size, TimingConfig().budget_s, TimingConfig().min_repeats) == (None, None, 7)
    assert (TimingConfig().precision, TimingConfig().compile, TimingConfig().max_cv) == ('amp', False, 0.05)


@pytest.mark.parametrize('section, where, fragments', [
    ('{batch_size: 0}', 'timing.batch_size', ('expected an int >= 1 or null', 'got 0')),
    ('{batch_size: 2.5}', 'timing.batch_size', ('expected an int >= 1 or null', 'got 2.5')),
    ('{budget_s: -1}', 'timing.budget_s', ('expected a number of seconds >= 0 or null', 'got -1')),
    ('{budget_s: fast}', 'timing.budget_s', ('expected a number of seconds >= 0 or null', "got 'fast'")),
    ('{budget_s: true}', 'timing.budget_s', ('expected a number of seconds >= 0 or null', 'got True')),
    ('{min_repeats: 0}', 'timing.min_repeats', ('expected an int >= 1', 'got 0')),
    ('{median_rse: 1}', 'timing.median_rse', ('expected a fraction >= 0 and < 1', 'got 1')),
    ('{median_rse: 2%}', 'timing.median_rse', ('expected a fraction >= 0 and < 1', "got '2%'")),
    ('{precision: 0.02}', 'timing.precision', ("expected one of ['amp', 'cast'], got 0.02",
                                               'is now timing.median_rse (median_rse: 0.02)')),
    ('{precision: 2e-2}', 'timing.precision', ('is now timing.median_rse (median_rse: 0.02)',)),
    ('{precision: bfloat16}', 'timing.precision', ("expected one of ['amp', 'cast']", "got 'bfloat16'")),
    ('{compile: yes please}', 'timing.compile', ('expected true or false',)),
    ('{max_cv: 0}', 'timing.max_cv', ('expected a fraction > 0', 'got 0')),
    ('{warmup: -1}', 'timing.warmup', ('expected an int >= 0', 'got -1')),
    ('{dtype: fp64}', 'timing.dtype', ("expected one of ['fp32', 'bf16', 'fp16']", "got 'fp64'")),
    ('{enabled: 1}', 'timing.enabled', ('expected true or false', 'got 1')),
    ('{threads: 0}', 'timing.threads', ("expected an int >= 1 (torch's intra-op threads per worker) or null",
                                        'got 0')),
    ('{repeats: 5}', 'timing.repeats', ('unknown key', "'budget_s'", "'min_repeats'", 'timed passes now follow')),
    ('[1]', 'timing', ('expected a mapping', 'got [1]')),
])
def test_timing_section_errors_name_key_and_expectation(write_matrix, section, where, fragments):
    path = write_matrix(MINIMAL + f'timing: {section}\n')
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    assert info.value.path == str(path)
    assert [p for p in info.value.problems if p.startswith(f'{where}: ') and all(f in p for f in fragments)], \
        str(info.value)


def test_every_timing_problem_is_reported_at_once(write_matrix):
    with pytest.raises(MatrixError) as info:
        load_matrix(write_matrix(MINIMAL + 'timing: {batch_size: 0, budget_s: -1, min_repeats: 0, warmup: -1}\n'))
    assert sorted(p.split(':')[0] for p in info.value.problems) == [
        'timing.batch_size', 'timing.budget_s', 'timing.min_repeats', 'timing.warmup']


# --- the report -------------------------------------------------------------------------------------------

def timed_case(path: str, samples_ms: list[float], budget_s: float, median_rse: float | None = None) -> CaseResult:
    return CaseResult(case_id=f'vit-timm-224x224-{path}', matrix='m', model='vit', origin='timm',
                      img_size=[224, 224], patch_size=None, window_size=None, path=path, status='passed',
                      device='cpu', device_name='Test CPU', dtype='fp32', batch_size=1,
                      time_median_ms=statistics.median(samples_ms), time_iqr_ms=0.0, time_min_ms=min(samples_ms),
                      images_per_s=1.0, timing_repeats=len(samples_ms), timing_budget_s=budget_s,
                      timing_median_rse=median_rse, time_samples_ms=samples_ms)


def _flat(text: str) -> str:
    """report.md's text with its wrapping undone."""
    return ' '.join(text.split())


def test_report_says_how_timing_was_measured(tmp_path):
    append_result(tmp_path, timed_case('create', [10.0] * 31, budget_s=2.0))
    append_result(tmp_path, timed_case('dynamic', [400.0] * 7, budget_s=2.0))   # 2.8 s: the floor won
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    timing = md[md.index('## Timing'):]
    assert ('Device cpu (Test CPU); dtype fp32; batch size 1; budget 2.0 s per case for warm-up and timed passes '
            'together; median and IQR over 7–31 timed passes per case. Timed eager.') in _flat(timing)
    assert '1 case took longer than the budget' in _flat(timing)
    rows = [[cell.strip() for cell in line.split('|')[1:-1]] for line in timing.splitlines() if line.startswith('|')]
    passes = rows[0].index('timed passes')
    assert [row[passes] for row in rows[2:]] == ['31', '7']
    assert '- timing budget (s per case): 2.0' in md.splitlines()


def test_report_says_when_timings_were_taken_on_a_busy_machine(tmp_path):
    quiet = dataclasses.replace(timed_case('create', [10.0] * 7, budget_s=2.0), load_average_start=0.5,
                                load_average_end=1.9, cpu_cores=2)
    append_result(tmp_path, quiet)
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    assert 'Busy machine' not in md                                # load below the cores: not busy
    append_result(tmp_path, dataclasses.replace(timed_case('dynamic', [10.0] * 7, budget_s=2.0),
                                                load_average_start=1.5, load_average_end=14.24, cpu_cores=2))
    files = write_report(tmp_path / RESULTS_FILE, tmp_path)
    assert ('**Busy machine**: 1 case of 2 timed while the 1-minute load average (up to 14.2) exceeded the 2 '
            'cores') in _flat(files.markdown.read_text())
    assert '<b>Busy machine</b>: 1 case of 2 timed' in _flat(files.html.read_text())


def test_report_says_when_timing_ended_on_median_rse(tmp_path):
    append_result(tmp_path, timed_case('create', [10.0] * 12, budget_s=10.0, median_rse=0.02))
    append_result(tmp_path, timed_case('dynamic', [400.0] * 7, budget_s=10.0, median_rse=0.02))
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    assert ('budget 10.0 s per case for warm-up and timed passes together, ended once the median was known to 2% '
            '(standard error); median and IQR over 7–12 timed passes per case. Timed eager.') in _flat(md)
    assert "- timing median RSE (the median's relative standard error that ends timing; 0: none): 0.02" in md


def test_report_says_how_the_passes_ran(tmp_path):
    settings = dict(dtype='bf16', precision='cast', compile=True, timing_max_cv=0.05)
    append_result(tmp_path, dataclasses.replace(timed_case('create', [10.0, 14.0] * 4, budget_s=2.0), **settings,
                                                timing_stable=False))
    append_result(tmp_path, dataclasses.replace(timed_case('dynamic', [10.0] * 8, budget_s=2.0), **settings,
                                                timing_stable=True))
    md = write_report(tmp_path / RESULTS_FILE, tmp_path).markdown.read_text()
    assert ('Timed through torch.compile, with weights and inputs cast to the dtype; 1 case not stable (CV above '
            '0.05).') in _flat(md)
    assert '- precision (amp: autocast; cast: weights and inputs in the dtype): cast' in md.splitlines()
