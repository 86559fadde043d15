"""harness.reference against timm's own resampling: the two independent implementations must agree.

Every tensor is tiny and seeded. timm is only called here, as the thing being compared against.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed, resample_patch_embed, resize_rel_pos_bias_table

from harness.reference import rel_pos_table
from harness.reference.patch_kernel import resample_patch_kernel
from harness.reference.pos_embed import resample_pos_embed
from harness.reference.rel_pos_table import resample_rel_pos_table

# timm's RegularGridInterpolator trips two harmless torch warnings
pytestmark = [pytest.mark.filterwarnings('ignore:Using a non-tuple sequence:UserWarning'),
              pytest.mark.filterwarnings('ignore:torch.searchsorted:UserWarning')]
MODES = [('bicubic', True), ('bilinear', False)]


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- absolute position embeddings ---------------------------------------------------------------------

def _pos_embed(grid, prefix, dim=8, **kwargs):
    return _randn(1, prefix + grid[0] * grid[1], dim, **kwargs)


@pytest.mark.parametrize('interpolation,antialias', MODES)
@pytest.mark.parametrize('prefix', [0, 1, 5])
@pytest.mark.parametrize('old,new', [((4, 4), (6, 6)), ((6, 6), (3, 3)), ((8, 2), (12, 4)), ((4, 6), (6, 4))])
def test_pos_embed_matches_timm(old, new, prefix, interpolation, antialias):
    pos = _pos_embed(old, prefix)
    ours = resample_pos_embed(pos, old, new, prefix, interpolation=interpolation, antialias=antialias)
    timms = resample_abs_pos_embed(pos, new_size=list(new), old_size=list(old), num_prefix_tokens=prefix,
                                   interpolation=interpolation, antialias=antialias)
    assert ours.shape == (1, prefix + new[0] * new[1], 8)
    torch.testing.assert_close(ours, timms, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[:, :prefix], pos[:, :prefix], atol=0, rtol=0)


def test_pos_embed_distinguishes_a_rectangular_grid_read_as_square():
    """The bug the harness hunts: an 8x2 grid reshaped as 4x4 yields the right shape and wrong values."""
    pos = _pos_embed((8, 2), 1)
    ours = resample_pos_embed(pos, (8, 2), (12, 4), 1)
    naive = resample_pos_embed(pos, (4, 4), (6, 8), 1)  # same token counts in and out, grid taken as square
    assert naive.shape == ours.shape
    assert (naive - ours).abs().max() > 0.1
    timms = resample_abs_pos_embed(pos, new_size=[12, 4], old_size=[8, 2], num_prefix_tokens=1)
    torch.testing.assert_close(ours, timms, atol=1e-6, rtol=0)


def test_pos_embed_keeps_dtype_and_skips_equal_grids():
    pos = _pos_embed((4, 6), 1, dtype=torch.float16)
    assert resample_pos_embed(pos, (4, 6), (4, 6), 1) is pos
    ours = resample_pos_embed(pos, (4, 6), (6, 4), 1)
    assert ours.dtype == torch.float16
    timms = resample_abs_pos_embed(pos, new_size=[6, 4], old_size=[4, 6], num_prefix_tokens=1)
    torch.testing.assert_close(ours, timms, atol=0, rtol=0)


def test_pos_embed_rejects_a_grid_that_does_not_fit():
    with pytest.raises(ValueError, match='4x4 grid'):
        resample_pos_embed(_pos_embed((8, 2), 1), (4, 4), (6, 6), 0)


# --- patch-embedding kernels ---------------------------------------------------------------------------

@pytest.mark.parametrize('interpolation,antialias', MODES)
@pytest.mark.parametrize('old,new', [((16, 16), (8, 8)), ((16, 16), (14, 14)), ((14, 14), (16, 16)),
                                     ((16, 16), (8, 12)), ((4, 6), (6, 4))])
def test_patch_kernel_matches_timm(old, new, interpolation, antialias):
    kernel = _randn(4, 3, *old) * 0.02
    ours = resample_patch_kernel(kernel, new, interpolation=interpolation, antialias=antialias)
    timms = resample_patch_embed(kernel, new_size=list(new), interpolation=interpolation, antialias=antialias)
    assert ours.shape == (4, 3, *new) and ours.dtype == kernel.dtype
    # timm builds the resize matrix and its pseudo-inverse in float32, we in float64: the gap is float32
    # rounding amplified by pinv's conditioning, observed below 5e-6 of the kernel's scale; allow 1e-4
    torch.testing.assert_close(ours, timms, atol=1e-4 * ours.abs().max().item(), rtol=0)


@pytest.mark.parametrize('interpolation,antialias', MODES)
@pytest.mark.parametrize('old,new', [((8, 8), (8, 8)), ((8, 8), (12, 12)), ((6, 4), (9, 10)), ((5, 5), (7, 11))])
def test_patch_kernel_keeps_tokens_of_upsampled_patches(old, new, interpolation, antialias):
    """FlexiViT's defining identity, exact when upsampling: <resize(x), w_new> == <x, w_old> for every x."""
    kernel = _randn(4, 3, *old, dtype=torch.float64)
    patches = _randn(5, 3, *old, seed=1, dtype=torch.float64)
    resized = F.interpolate(patches, size=new, mode=interpolation, antialias=antialias, align_corners=False)
    new_kernel = resample_patch_kernel(kernel, new, interpolation=interpolation, antialias=antialias)
    tokens_old = torch.einsum('bihw,oihw->bo', patches, kernel)
    tokens_new = torch.einsum('bihw,oihw->bo', resized, new_kernel)
    torch.testing.assert_close(tokens_new, tokens_old, atol=1e-9, rtol=1e-9)


def test_patch_kernel_skips_equal_sizes():
    kernel = _randn(2, 3, 4, 6)
    assert resample_patch_kernel(kernel, (4, 6)) is kernel


# --- Swin relative position bias tables ------------------------------------------------------------------

def _table(window, heads=3, seed=0):
    return _randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, seed=seed)


@pytest.mark.parametrize('old,new', [((7, 7), (8, 8)), ((7, 7), (12, 12)), ((12, 12), (7, 7)), ((8, 8), (6, 10)),
                                     ((6, 10), (8, 8)), ((2, 3), (5, 2)), ((8, 8), (8, 10)), ((7, 7), (24, 24)),
                                     ((7, 7), (1, 1)), ((1, 1), (3, 3))])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_rel_pos_table_matches_timm(old, new, dtype):
    table = _table(old).to(dtype)
    rows = (2 * new[0] - 1) * (2 * new[1] - 1)
    ours = resample_rel_pos_table(table, old, new)
    timms = resize_rel_pos_bias_table(table, new_window_size=new, new_bias_shape=(rows, 3), old_window_size=old)
    assert ours.shape == (rows, 3) and ours.dtype == dtype
    # timm interpolates in float32 (its grid coordinates included): errors of a few float32 ulps of values ~1
    torch.testing.assert_close(ours, timms.to(dtype), atol=1e-5, rtol=0)


@pytest.mark.parametrize('old,new', [((7, 7), (12, 12)), ((6, 10), (8, 8)), ((8, 8), (8, 10))])
def test_rel_pos_table_keeps_the_zero_offset_when_growing(old, new):
    table = _table(old)
    torch.testing.assert_close(_zero_offset(resample_rel_pos_table(table, old, new), new),
                               _zero_offset(table, old), atol=0, rtol=0)


def _zero_offset(table, window):
    return table.T.reshape(-1, 2 * window[0] - 1, 2 * window[1] - 1)[:, window[0] - 1, window[1] - 1]


def test_rel_pos_table_resamples_an_axis_that_keeps_its_size():
    """BEiT's ratio search is bracketed to [1.01, 1.5]: an axis that keeps its size still gets q ~ 1.01, so
    its outer offsets blend with their neighbours (offset 7 of 8: 0.80 of itself, 0.20 of offset 6)."""
    weights = rel_pos_table._linear_weights(rel_pos_table._progression_offsets(15, 15),
                                           rel_pos_table._uniform_offsets(15))
    assert weights[-1, -1].item() == pytest.approx(0.7988, abs=1e-4)
    assert weights[-1, -2].item() == pytest.approx(0.2012, abs=1e-4)


def test_rel_pos_table_linear_weights_match_numpy_interp():
    nodes = torch.tensor([-4.5, -2.0, -1.0, 0.0, 1.0, 2.0, 4.5], dtype=torch.float64)
    points = torch.linspace(-6, 6, 25, dtype=torch.float64)
    values = _randn(7, dtype=torch.float64)
    expected = np.interp(points.numpy(), nodes.numpy(), values.numpy())  # holds edge values beyond the nodes
    np.testing.assert_allclose((rel_pos_table._linear_weights(nodes, points) @ values).numpy(), expected, atol=1e-12)


def test_rel_pos_table_skips_equal_windows_and_rejects_wrong_shapes():
    table = _table((6, 10))
    assert resample_rel_pos_table(table, (6, 10), (6, 10)) is table
    with pytest.raises(ValueError, match='8x8 window'):
        resample_rel_pos_table(table, (8, 8), (7, 7))
