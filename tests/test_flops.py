"""FLOPs per image against hand counts, the datasheet peak table, and the work figures a timed case records."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import harness.case.work
from harness.case.timed import record_timing
from harness.store.case_result import CaseResult
from harness.timing.device_peaks import peak_tflops
from harness.timing.flops import flops_per_image
from harness.timing.forward import Timing

CPU = torch.device('cpu')


def vit_flops(img_size: tuple[int, int], patch: int, dim: int, depth: int, classes: int) -> int:
    """A ViT's forward pass by hand, a multiply-add counting 2: patch embedding, then per block the qkv
    projection, the two attention products (scores, weighted values; over all heads together N·N·dim each),
    the output projection and the 4x MLP, then the classifier on the class token."""
    grid = (img_size[0] // patch) * (img_size[1] // patch)
    tokens = grid + 1
    block = 2 * tokens * dim * 3 * dim + 2 * 2 * tokens * tokens * dim + 2 * tokens * dim * dim \
        + 2 * 2 * tokens * dim * 4 * dim
    return 2 * grid * dim * 3 * patch * patch + depth * block + 2 * dim * classes


def test_a_known_layer_counts_as_by_hand():
    linear = nn.Linear(24, 2)   # applied to the last axis of a (1, 3, 16, 24) image: 48 rows of 24 -> 2
    assert flops_per_image(linear, (16, 24), CPU) == 2 * (3 * 16) * 24 * 2
    conv = nn.Conv2d(3, 4, 3)   # every output pixel of every output channel: 3 x 3 x 3 multiply-adds
    assert flops_per_image(conv, (16, 24), CPU) == 2 * (14 * 22) * 4 * (3 * 3 * 3)


def test_attention_on_the_cpu_is_counted():
    model = timm.create_model('vit_tiny_patch16_224', depth=1, embed_dim=32, num_heads=2, img_size=32,
                              num_classes=10).eval()
    by_hand = vit_flops((32, 32), 16, 32, 1, 10)
    assert flops_per_image(model, (32, 32), CPU) == by_hand
    with torch.inference_mode(), FlopCounterMode(display=False) as plain:   # torch's counter alone misses it
        model(torch.randn(1, 3, 32, 32))
    assert plain.get_total_flops() == by_hand - 2 * 2 * 5 * 5 * 32


@pytest.mark.parametrize('name, dtype, tf32, peak', [
    ('NVIDIA H100 80GB HBM3', 'bf16', False, 989.4),      # SXM5
    ('NVIDIA H100 PCIe', 'bf16', False, 756.5),
    ('NVIDIA H100 NVL', 'fp16', False, 835.5),
    ('NVIDIA H200', 'bf16', False, 989.4),
    ('NVIDIA GH200 480GB', 'bf16', False, 989.4),
    ('NVIDIA A100-SXM4-80GB', 'fp32', False, 19.5),
    ('NVIDIA A100-PCIE-40GB', 'fp32', True, 156.0),       # matmuls allowed TF32
    ('NVIDIA A10', 'bf16', False, 125.0),
    ('NVIDIA A10G', 'bf16', False, None),                 # AWS's part: no datasheet figure
    ('NVIDIA L4', 'bf16', False, 121.0),
    ('NVIDIA L40S', 'bf16', False, 362.05),
    ('NVIDIA L40', 'bf16', False, 181.05),
    ('Tesla T4', 'fp16', False, 65.0),
    ('Tesla T4', 'bf16', False, None),                    # no bf16 tensor cores
    ('Tesla V100-SXM2-16GB', 'fp16', False, 125.0),
    ('Tesla V100-PCIE-32GB', 'fp16', False, 112.0),
    ('NVIDIA GeForce RTX 3090 Ti', 'bf16', False, None),
    ('AMD EPYC 7B13, 2 threads', 'fp32', False, None),    # a CPU
])
def test_datasheet_peaks(name, dtype, tf32, peak):
    assert peak_tflops(name, dtype, tf32=tf32) == peak


def test_work_figures_of_a_timed_case():
    result = CaseResult(case_id='c', matrix='m', model='vit', origin='timm', img_size=[224, 224], patch_size=16,
                        window_size=None, path='create', device_name='NVIDIA H100 80GB HBM3', dtype='bf16',
                        flops_per_image=35_127_656_448)
    samples = (30.0, 31.0, 29.0, 30.5, 30.2)
    record_timing(result, Timing(samples, 256, 5.0, 0.0, 0.05, 256, 1000.0), [1] * 5)
    assert result.images_per_s == pytest.approx(256 / (np.median(samples) / 1000))
    assert result.achieved_tflops == pytest.approx(35_127_656_448 * result.images_per_s / 1e12)
    assert result.device_peak_tflops == 989.4
    assert result.peak_fraction == pytest.approx(result.achieved_tflops / 989.4)
    assert [result.time_p50_ms, result.time_p90_ms, result.time_p99_ms] == pytest.approx(
        np.percentile(samples, [50, 90, 99]))
    assert result.time_cv == pytest.approx(np.std(samples, ddof=1) / np.mean(samples))
    assert (result.timing_stable, result.batch_size, result.batch_size_used) == (True, 256, 256)


TINY_VIT = '''
name: flops
models:
  - {name: vit_tiny_patch16_224, depth: 1, embed_dim: 32, num_heads: 2, img_size: 32}
origins: [timm]
sizes: [[32, 64]]
paths: [create, set_input_size]
'''


def test_timed_cases_record_samples_flops_and_tflops_with_the_native_model_parked(run_matrix, monkeypatch):
    parked = []
    real = harness.case.work.parked

    def spy(models, device):
        parked.append([model.patch_embed.img_size for model in models])
        return real(models, device)

    monkeypatch.setattr(harness.case.work, 'parked', spy)
    results = list(run_matrix(TINY_VIT, timing=True).values())
    assert [r.status for r in results] == ['passed', 'passed']
    for r in results:
        assert r.flops_per_image == vit_flops((32, 64), 16, 32, 1, 1000)
        assert len(r.time_samples_ms) == r.timing_repeats == 2
        assert r.time_p50_ms == pytest.approx(np.median(r.time_samples_ms))
        assert r.time_p90_ms == pytest.approx(np.percentile(r.time_samples_ms, 90))
        assert r.achieved_tflops == pytest.approx(r.flops_per_image * r.images_per_s / 1e12)
        assert r.device_peak_tflops is None and r.peak_fraction is None   # a CPU: no datasheet peak
    # each case timed with the native (32x32) model and nothing else held set aside: the create model of the
    # second case's target was released when its own case was timed
    assert parked == [[(32, 32)], [(32, 32)]]
