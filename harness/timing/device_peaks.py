"""Datasheet peak throughput of common GPUs, for the fraction of the hardware's limit a case ran at.

Dense figures (without 2:4 structured sparsity, which the datasheets quote as well, at twice these) in TFLOP/s
from NVIDIA's product datasheets: ``fp32`` on the CUDA cores, ``tf32``/``bf16``/``fp16`` on the tensor cores
with float32 accumulation (GeForce cards run that at half their float16-accumulate rate). A figure is what the
silicon can issue, not what a real kernel reaches: a large bf16 matmul gets about 80% of it on an H100, so a
model at 30-40% of the peak is doing well.

``fp32`` cases count against the TF32 figure when torch lets matmuls use TF32
(``torch.get_float32_matmul_precision() != 'highest'``), against the plain FP32 one otherwise. A device that
is not in the table (every CPU among them) has no peak: its fraction is null.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DevicePeak:
    pattern: str          # searched (case-insensitive) in torch.cuda.get_device_name()
    fp32: float
    tf32: float | None
    bf16: float | None
    fp16: float | None


# the first entry whose pattern matches names the device: specific variants before the family
PEAKS = (
    DevicePeak(r'H100.*NVL', fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5),
    DevicePeak(r'H100.*PCIe', fp32=51.0, tf32=378.0, bf16=756.5, fp16=756.5),
    DevicePeak(r'H100', fp32=67.0, tf32=494.7, bf16=989.4, fp16=989.4),          # SXM5 ("H100 80GB HBM3")
    DevicePeak(r'H200 NVL', fp32=60.0, tf32=417.5, bf16=835.5, fp16=835.5),
    DevicePeak(r'H200', fp32=67.0, tf32=494.7, bf16=989.4, fp16=989.4),          # SXM; GH200 the same
    DevicePeak(r'B200', fp32=75.0, tf32=1125.0, bf16=2250.0, fp16=2250.0),       # HGX B200 / 8
    DevicePeak(r'A100', fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0),          # SXM4 and PCIe
    DevicePeak(r'\bA10\b', fp32=31.2, tf32=62.5, bf16=125.0, fp16=125.0),        # not A10G (AWS's own part)
    DevicePeak(r'\bA30\b', fp32=10.3, tf32=82.0, bf16=165.0, fp16=165.0),
    DevicePeak(r'\bL40S\b', fp32=91.6, tf32=183.0, bf16=362.05, fp16=362.05),
    DevicePeak(r'\bL40\b', fp32=90.5, tf32=90.5, bf16=181.05, fp16=181.05),
    DevicePeak(r'\bL4\b', fp32=30.3, tf32=60.0, bf16=121.0, fp16=121.0),
    DevicePeak(r'\bT4\b', fp32=8.1, tf32=None, bf16=None, fp16=65.0),
    DevicePeak(r'V100S', fp32=16.4, tf32=None, bf16=None, fp16=130.0),
    DevicePeak(r'V100.*PCIE', fp32=14.0, tf32=None, bf16=None, fp16=112.0),
    DevicePeak(r'V100', fp32=15.7, tf32=None, bf16=None, fp16=125.0),            # SXM2
    DevicePeak(r'RTX 4090', fp32=82.6, tf32=82.6, bf16=165.2, fp16=165.2),
    DevicePeak(r'RTX 3090(?! Ti)', fp32=35.6, tf32=35.6, bf16=71.0, fp16=71.0),
)


def device_peak(device_name: str) -> DevicePeak | None:
    return next((peak for peak in PEAKS if re.search(peak.pattern, device_name, re.IGNORECASE)), None)


def peak_tflops(device_name: str, dtype: str, tf32: bool = False) -> float | None:
    """The datasheet dense peak of ``device_name`` for ``dtype`` (fp32, bf16, fp16), or None when unknown."""
    peak = device_peak(device_name or '')
    if peak is None:
        return None
    if dtype == 'fp32':
        return peak.tf32 if tf32 and peak.tf32 else peak.fp32
    return {'bf16': peak.bf16, 'fp16': peak.fp16}.get(dtype)
