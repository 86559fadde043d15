"""The work one forward pass does: floating-point operations per image, counted by torch.utils.flop_counter.

A multiply-add counts as two operations (torch's convention, and the one datasheet peaks use), so ViT-B/16
at 224 is 35.1 GFLOP per image. Matrix multiplies, convolutions and attention are counted; element-wise work
(norms, activations, softmax) is not, as in every FLOP count that is set beside a datasheet peak.

torch counts attention only in the CUDA kernels (flash, memory-efficient, cuDNN); on the CPU, where
``scaled_dot_product_attention`` runs its own flash kernel, it would count none: that kernel is counted here
with torch's own attention formula.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _uncounted_kernels() -> dict[Any, Any]:
    """Attention kernels torch's flop counter has no formula for, in this torch release."""
    names = ('_scaled_dot_product_flash_attention_for_cpu',)
    return {getattr(torch.ops.aten, name): _sdpa_flops for name in names if hasattr(torch.ops.aten, name)}


@torch.inference_mode()
def flops_per_image(model: nn.Module, img_size: tuple[int, int], device: torch.device) -> int:
    """Floating-point operations of one forward pass of ``model`` (float32) on one image at ``img_size``: a
    batch-1 pass on ``device``. The count does not depend on the dtype the model is timed in."""
    inputs = torch.randn(1, 3, *img_size, device=device)
    with FlopCounterMode(display=False, custom_mapping=_uncounted_kernels()) as counter:
        model(inputs)
    return int(counter.get_total_flops())


def achieved_tflops(flops: int | None, images_per_s: float | None) -> float | None:
    if flops is None or images_per_s is None:
        return None
    return flops * images_per_s / 1e12
