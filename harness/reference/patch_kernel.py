"""Patch-embedding kernels: FlexiViT's pseudo-inverse resampling."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_patch_kernel(weight: Tensor, new_patch: tuple[int, int], interpolation: str = 'bicubic',
                          antialias: bool = True) -> Tensor:
    """Resample a patch-embedding kernel ``(O, I, ph, pw)`` to ``new_patch`` as FlexiViT does.

    FlexiViT (https://arxiv.org/abs/2212.08013) picks the new kernel so that a patch resized to the new size
    gives the same token as the original patch gave with the old kernel: with ``M`` the linear map that
    resizes a patch, ``<M x, w_new> = <x, w_old>``, solved in the least-squares sense as
    ``w_new = pinv(M^T) w_old``. The identity is exact when upsampling (``M^T`` has full row rank).
    Computed in float64; returns ``weight`` itself if the size does not change.
    """
    if weight.ndim != 4:
        raise ValueError(f'expected a conv kernel (O, I, h, w), got shape {tuple(weight.shape)}')
    old_patch, new_patch = tuple(weight.shape[-2:]), tuple(new_patch)
    if old_patch == new_patch:
        return weight
    resize = _resize_matrix(old_patch, new_patch, interpolation, antialias, weight.device)
    flat = weight.reshape(*weight.shape[:2], -1).to(torch.float64)
    new = flat @ torch.linalg.pinv(resize.T).T  # per (O, I): pinv(M^T) @ w_old, on row vectors
    return new.reshape(*weight.shape[:2], *new_patch).to(weight.dtype)


def _resize_matrix(old: tuple[int, int], new: tuple[int, int], interpolation: str, antialias: bool,
                   device: torch.device) -> Tensor:
    """The ``(new_h * new_w, old_h * old_w)`` matrix of ``F.interpolate``: column j resizes basis patch j."""
    basis = torch.eye(old[0] * old[1], dtype=torch.float64, device=device).reshape(-1, 1, *old)
    resized = F.interpolate(basis, size=new, mode=interpolation, antialias=antialias, align_corners=False)
    return resized.flatten(1).T
