"""The harness's own resampling of checkpoint tensors, written independently of timm.

The fidelity check loads a checkpoint into a resized model and asks whether timm resampled each tensor to
the values it should have. Comparing timm against timm would prove nothing, so the expected values come from
this module: a second implementation of the same three algorithms, written from their definitions and
calling none of timm's resampling code.

* absolute position embeddings: resize the token grid as an image (``resample_pos_embed``);
* patch-embedding kernels: FlexiViT pseudo-inverse resampling (``resample_patch_kernel``);
* Swin relative position bias tables: BEiT geometric-progression interpolation
  (``resample_rel_pos_table``).

Every size is an ``(h, w)`` tuple and nothing assumes a square grid, since treating a rectangular grid as
square is one of the bugs the harness hunts.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def resample_pos_embed(pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                       num_prefix_tokens: int, interpolation: str = 'bicubic', antialias: bool = True) -> Tensor:
    """Resize an absolute position embedding from ``old_grid`` to ``new_grid`` tokens.

    ``pos_embed`` is ``(1, num_prefix_tokens + old_h * old_w, C)``: prefix tokens (class, registers) are kept
    as they are; the rest, in row-major order, is treated as a ``C``-channel ``old_h x old_w`` image, resized
    with ``F.interpolate`` in float32 and flattened back. Returns ``pos_embed`` itself if the grids are equal.
    """
    old_grid, new_grid = tuple(old_grid), tuple(new_grid)
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.ndim != 3 or pos_embed.shape[:2] != (1, expected):
        raise ValueError(f'pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix '
                         f'tokens and a {old_grid[0]}x{old_grid[1]} grid')
    if old_grid == new_grid:
        return pos_embed
    prefix, tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    image = tokens.float().reshape(1, *old_grid, -1).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=new_grid, mode=interpolation, antialias=antialias, align_corners=False)
    tokens = image.flatten(2).transpose(1, 2).to(pos_embed.dtype)
    return torch.cat([prefix, tokens], dim=1)


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


def resample_rel_pos_table(table: Tensor, old_window: tuple[int, int], new_window: tuple[int, int]) -> Tensor:
    """Resize a Swin relative position bias table from ``old_window`` to ``new_window``.

    ``table`` is ``((2 * old_h - 1) * (2 * old_w - 1), num_heads)``: per head, a row-major grid of biases
    indexed by (dy, dx) offset. The algorithm is BEiT's, as timm applies it: along each axis the old offsets
    are placed on a geometric progression (``_progression_offsets``), the new offsets on the integers, and
    each head is interpolated bilinearly on that non-uniform grid, holding the edge values beyond it
    (``_linear_weights``). Bilinear interpolation on a rectilinear grid is separable, so per head it is
    ``W_y @ bias @ W_x^T``. Computed in float64; returns ``table`` itself if the window does not change.
    """
    old_window, new_window = tuple(old_window), tuple(new_window)
    old_size = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new_size = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if table.ndim != 2 or table.shape[0] != old_size[0] * old_size[1]:
        raise ValueError(f'table of shape {tuple(table.shape)} is not a relative position bias table for a '
                         f'{old_window[0]}x{old_window[1]} window')
    if old_size == new_size:
        return table
    weights_y, weights_x = (
        _linear_weights(_progression_offsets(old, new), _uniform_offsets(new)).to(table.device)
        for old, new in zip(old_size, new_size))
    biases = table.T.to(torch.float64).reshape(-1, *old_size)  # (heads, old rows, old cols)
    resized = weights_y @ biases @ weights_x.T  # (heads, new rows, new cols)
    return resized.flatten(1).T.to(table.dtype)


def _progression_offsets(src: int, dst: int) -> Tensor:
    """Where BEiT places the ``src`` old offsets of one axis when resizing it to ``dst`` offsets.

    The offsets ``1, 2, ...`` become the partial sums ``1, 1 + q, 1 + q + q^2, ...`` (mirrored for negative
    offsets), with ratio ``q`` found by bisection on ``[1.01, 1.5]`` so that the largest lands on the
    largest new offset ``dst // 2``. The bisection is BEiT's to the letter: stop once the bracket is under
    1e-6 and take its last midpoint. A ratio that would have to lie outside the bracket is pinned near its
    bound: an axis that shrinks or keeps its size still gets ``q ~ 1.01`` (a slight resampling, not a crop
    or the identity), and one that grows too far gets ``q ~ 1.5`` and falls short of the new outer offsets.
    """
    half = src // 2
    left, right = 1.01, 1.5
    while right - left > 1e-6:
        q = (left + right) / 2.0
        if (1.0 - q ** half) / (1.0 - q) > dst // 2:
            right = q
        else:
            left = q
    positive = torch.tensor([q ** i for i in range(half)], dtype=torch.float64).cumsum(0)
    return torch.cat([-positive.flip(0), torch.zeros(1, dtype=torch.float64), positive])


def _uniform_offsets(size: int) -> Tensor:
    """The offsets ``-(size // 2) .. size // 2`` of one axis of a table with ``size`` (odd) entries."""
    return torch.arange(-(size // 2), size // 2 + 1, dtype=torch.float64)


def _linear_weights(nodes: Tensor, points: Tensor) -> Tensor:
    """``(len(points), len(nodes))`` weights of piecewise-linear interpolation at ``points``.

    ``nodes`` is increasing and need not be evenly spaced; points beyond it take the nearest edge value.
    """
    points = points.clamp(nodes[0], nodes[-1])
    left = (torch.searchsorted(nodes, points, right=True) - 1).clamp(0, len(nodes) - 1)
    right = (left + 1).clamp(max=len(nodes) - 1)
    span = nodes[right] - nodes[left]
    frac = torch.where(span > 0, (points - nodes[left]) / span, 0.0)  # span is 0 only where left == right
    return (1 - frac)[:, None] * F.one_hot(left, len(nodes)) + frac[:, None] * F.one_hot(right, len(nodes))


def shifted_window_mask(feat_size: tuple[int, int], window: tuple[int, int], shift: tuple[int, int]) -> Tensor | None:
    """The additive attention mask of Swin's shifted windows for a ``feat_size`` map (None without a shift).

    The map is padded to whole windows and rolled by ``-shift``; the roll brings pieces of the map that are
    not neighbours into one window, so tokens may attend only within their own region. Along each axis the
    rolled map has three regions, ``[0, L - window)``, ``[L - window, L - shift)`` and ``[L - shift, L)``
    (Swin paper, Fig. 4); an axis that is not shifted is one region. Returns
    ``(num_windows, window_area, window_area)``: 0 within a region, -100 across.
    """
    if not any(shift):
        return None
    padded = [math.ceil(f / w) * w for f, w in zip(feat_size, window)]
    regions = [torch.bucketize(torch.arange(n), torch.tensor([n - w, n - s]), right=True) if s
               else torch.zeros(n, dtype=torch.long) for n, w, s in zip(padded, window, shift)]
    labels = regions[0][:, None] * 3 + regions[1][None, :]                        # (H, W)
    windows = labels.reshape(padded[0] // window[0], window[0], padded[1] // window[1], window[1])
    windows = windows.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])      # (num_windows, area)
    different = windows[:, None, :] != windows[:, :, None]
    return different.float() * -100.0
