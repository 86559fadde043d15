"""harness.reference's relative-position oracles against timm: tables resampled on the true (rectangular) source
window in both layouts, and the attention bias every relative-position module computes at a window.

Every tensor is tiny and seeded; timm is only called as the thing being compared against.
"""
from __future__ import annotations

import pytest
import torch
from timm.layers import RelPosBias, RelPosBiasTf, RelPosMlp, resize_rel_pos_bias_table
from timm.models.beit import RelativePositionBias

from harness.reference.rel_pos_bias import flat_table_bias, log_offsets, mlp_bias, per_head_table_bias
from harness.reference.rel_pos_table import resample_rel_pos_grid, resample_rel_pos_table

# timm's RegularGridInterpolator trips two harmless torch warnings
pytestmark = [pytest.mark.filterwarnings('ignore:Using a non-tuple sequence:UserWarning'),
              pytest.mark.filterwarnings('ignore:torch.searchsorted:UserWarning')]
WINDOWS = [((4, 6), (6, 4)), ((2, 4), (3, 7)), ((5, 5), (3, 8)), ((3, 8), (5, 5))]


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _rows(window, extra=0):
    return (2 * window[0] - 1) * (2 * window[1] - 1) + extra


# --- tables ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('old,new', WINDOWS)
@pytest.mark.parametrize('extra', [0, 3])
def test_flat_table_matches_timm_given_the_source_window(old, new, extra):
    table = _randn(_rows(old, extra), 3)
    ours = resample_rel_pos_table(table, old, new, extra_rows=extra)
    timms = resize_rel_pos_bias_table(table, new_window_size=new, new_bias_shape=(_rows(new, extra), 3),
                                      old_window_size=old)
    torch.testing.assert_close(ours, timms, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[_rows(new):], table[_rows(old):], atol=0, rtol=0)   # class-token rows kept


@pytest.mark.parametrize('old,new', WINDOWS)
def test_per_head_table_matches_timm(old, new):
    table = _randn(3, 2 * old[0] - 1, 2 * old[1] - 1)
    ours = resample_rel_pos_grid(table, old, new)
    timms = resize_rel_pos_bias_table(table, new_window_size=new, new_bias_shape=(3, 2 * new[0] - 1, 2 * new[1] - 1))
    assert ours.shape == (3, 2 * new[0] - 1, 2 * new[1] - 1)
    torch.testing.assert_close(ours, timms, atol=1e-5, rtol=0)


def test_a_flat_table_is_one_per_head_table_per_head():
    """The two layouts hold the same biases; resampling one is resampling the other."""
    flat = _randn(_rows((3, 5)), 2)
    per_head = flat.T.reshape(2, 5, 9)
    torch.testing.assert_close(resample_rel_pos_grid(per_head, (3, 5), (4, 4)),
                               resample_rel_pos_table(flat, (3, 5), (4, 4)).T.reshape(2, 7, 7), atol=0, rtol=0)


def test_the_square_source_assumption_gives_the_right_shape_and_wrong_values():
    """A 2x14 window's 3x27 offsets are as many rows as a 5x5 window's 9x9: a loader that infers a square source
    (timm's checkpoint loaders) resamples it silently wrong. The oracle, told the true window, does not."""
    table = _randn(_rows((2, 14), 3), 2)
    ours = resample_rel_pos_table(table, (2, 14), (4, 14), extra_rows=3)
    new_shape = (_rows((4, 14), 3), 2)
    assumed_square = resize_rel_pos_bias_table(table, new_window_size=(4, 14), new_bias_shape=new_shape)
    told = resize_rel_pos_bias_table(table, new_window_size=(4, 14), new_bias_shape=new_shape, old_window_size=(2, 14))
    assert assumed_square.shape == ours.shape and (assumed_square - ours).abs().max() > 0.5
    torch.testing.assert_close(ours, told, atol=1e-5, rtol=0)


def test_tables_that_do_not_fit_their_window_are_refused():
    with pytest.raises(ValueError, match='2x4 window with 3 extra rows'):
        resample_rel_pos_table(_randn(_rows((2, 4)), 2), (2, 4), (3, 3), extra_rows=3)
    with pytest.raises(ValueError, match='per-head relative position bias table for a 4x2 window'):
        resample_rel_pos_grid(_randn(2, 3, 7), (4, 2), (3, 3))


# --- the attention bias at a window ----------------------------------------------------------------------

def _filled(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return module.eval()


@pytest.mark.parametrize('window,resized', [((3, 5), (4, 2)), ((2, 7), (5, 5))])
@pytest.mark.parametrize('prefix', [0, 1])
def test_flat_table_bias_matches_timm_before_and_after_set_window_size(window, resized, prefix):
    module = _filled(RelPosBias(window, num_heads=3, prefix_tokens=prefix))
    for at in (window, resized):
        module.set_window_size(at)
        ours = flat_table_bias(module.relative_position_bias_table.detach(), at, prefix)
        torch.testing.assert_close(ours.float(), module.get_bias()[0].detach(), atol=0, rtol=0)


def test_flat_table_bias_matches_beits_shared_bias():
    module = _filled(RelativePositionBias((2, 7), num_heads=2))
    ours = flat_table_bias(module.relative_position_bias_table.detach(), (2, 7), prefix_tokens=1)
    torch.testing.assert_close(ours.float(), module().detach(), atol=0, rtol=0)


@pytest.mark.parametrize('window,resized', [((3, 5), (4, 2)), ((2, 7), (5, 5))])
def test_per_head_table_bias_matches_timms_tensorflow_lookup(window, resized):
    module = _filled(RelPosBiasTf(window, num_heads=3))
    for at in (window, resized):
        module.set_window_size(at)
        ours = per_head_table_bias(module.relative_position_bias_table.detach(), at)
        torch.testing.assert_close(ours.float(), module.get_bias().detach(), atol=0, rtol=0)


def test_the_two_table_layouts_count_offsets_in_opposite_directions():
    """Swin/BEiT index by query - key, TensorFlow MaxViT by key - query: the same table read with the other
    convention is the bias transposed, which a wrong lookup would produce with the right shape."""
    per_head = _randn(2, 5, 9)
    flat = per_head.flatten(1).T
    torch.testing.assert_close(per_head_table_bias(per_head, (3, 5)), flat_table_bias(flat, (3, 5)).transpose(1, 2))
    assert (per_head_table_bias(per_head, (3, 5)) - flat_table_bias(flat, (3, 5))).abs().max() > 0.5


@pytest.mark.parametrize('mode', ['cr', 'swin'])
@pytest.mark.parametrize('prefix', [0, 1])
def test_mlp_bias_matches_timm_before_and_after_set_window_size(mode, prefix):
    module = _filled(RelPosMlp((3, 5), num_heads=2, hidden_dim=16, prefix_tokens=prefix, mode=mode))
    layers = [(module.mlp.fc1.weight.detach(), module.mlp.fc1.bias.detach()),
              (module.mlp.fc2.weight.detach(), None if module.mlp.fc2.bias is None else module.mlp.fc2.bias.detach())]
    for at in ((3, 5), (6, 2)):
        module.set_window_size(at)
        ours = mlp_bias(layers, at, mode, prefix_tokens=prefix)
        # timm evaluates the MLP in float32, we in float64: observed below 4e-6 on biases of this scale
        torch.testing.assert_close(ours.float(), module.get_bias()[0].detach(), atol=2e-5, rtol=0)


def test_log_offsets_cr_only_add_offsets_further_out_on_a_larger_window():
    """timm's 'cr' coordinates are the plain offsets, log-spaced: the MLP sees the old window's inputs unchanged
    and new ones beyond them (what lets the model extrapolate to a larger window)."""
    small, large = log_offsets((3, 5), 'cr'), log_offsets((5, 6), 'cr')
    torch.testing.assert_close(large[2:7, 1:10], small, atol=0, rtol=0)


def test_log_offsets_swin_are_normalised_by_the_pretraining_window():
    """Swin V2 divides offsets by the pretraining window's size - 1: told it, a larger window keeps the old
    inputs (and adds further ones); not told it, every window spans the same range, each offset moved."""
    own, pretrained = log_offsets((5, 6), 'swin'), log_offsets((5, 6), 'swin', pretrained_window=(3, 5))
    torch.testing.assert_close(pretrained[2:7, 1:10], log_offsets((3, 5), 'swin'), atol=1e-12, rtol=0)
    torch.testing.assert_close(own[-1, -1], log_offsets((3, 5), 'swin')[-1, -1], atol=1e-12, rtol=0)
    assert (own[2:7, 1:10] - log_offsets((3, 5), 'swin')).abs().max() > 0.1
