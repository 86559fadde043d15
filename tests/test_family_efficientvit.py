"""EfficientViT-MSRA: windows chosen per stage from the shorter side, LeViT bias tables resized where a window
changes, and the per-token-pair bias they expand to; each oracle proven against a deliberately wrong timm."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from harness.families import FAMILIES, Target, family_of
from harness.families.base import meta_model
from harness.reference.offset_bias import offset_bias, resample_offset_bias_table
from harness.spec.matrix import ModelSpec

MODEL = 'efficientvit_m0'
# a tiny m0 trained at 64x64: stage maps 4, 2, 1 under windows of at most 4, so its windows are (4, 2, 1)
OVERRIDES = dict(embed_dim=[32, 48, 64], key_dim=[8, 8, 8], depth=[1, 1, 1], num_heads=[2, 2, 2],
                 window_size=[4, 4, 4], img_size=64)
ENTRY = '{name: efficientvit_m0, embed_dim: [32, 48, 64], key_dim: [8, 8, 8], depth: [1, 1, 1], ' \
        'num_heads: [2, 2, 2], window_size: [4, 4, 4], img_size: 64}'
TARGET = '96x128'   # the shorter side sets the windows: maps 6, 3, 2 -> windows (4, 3, 2): stages 1 and 2 grow


def matrix(paths: str = '[create, set_input_size, dynamic]') -> str:
    return f'name: effvit\nmodels: [{ENTRY}]\norigins: [timm]\nsizes: [[96, 128]]\npaths: {paths}\n'


def test_windows_follow_the_shorter_side_and_the_configured_limit():
    family = family_of(MODEL)
    assert family.name == 'efficientvit_msra'
    source = family.geometry(meta_model(ModelSpec(MODEL, tuple(sorted((k, _frozen(v)) for k, v in
                                                                          OVERRIDES.items())))))
    assert source.window_sizes == ((4, 4), (2, 2), (1, 1)) and source.window_limits == (4, 4, 4)
    wide = family.expected_geometry(source, Target((96, 160)))
    assert wide.window_sizes == ((4, 4), (3, 3), (2, 2))
    assert family.expected_geometry(source, Target((160, 96))).window_sizes == wide.window_sizes
    assert family.expected_geometry(source, Target((192, 256))).window_sizes == ((4, 4), (4, 4), (3, 3))
    assert family.expected_shapes(wide, 2)['forward_intermediates'] == [(2, 32, 6, 10), (2, 48, 3, 5), (2, 64, 2, 3)]


def test_offset_bias_indexes_the_table_by_absolute_offset():
    table = torch.arange(2 * 9, dtype=torch.float32).reshape(2, 9)   # window 3: offsets (|dy|, |dx|) row-major
    bias = offset_bias(table, 3)
    assert bias.shape == (2, 9, 9)
    assert bias[1, 0, 8].item() == table[1, 2 * 3 + 2].item()   # (0, 0) to (2, 2)
    assert bias[0, 5, 1].item() == table[0, 1 * 3 + 1].item()   # (1, 2) to (0, 1)
    assert torch.equal(bias, bias.transpose(1, 2))


def test_table_resize_keeps_a_constant_and_is_identity_at_the_same_window():
    table = torch.full((3, 4), 0.7)
    assert torch.allclose(resample_offset_bias_table(table, 2, 5), torch.full((3, 25), 0.7))
    assert resample_offset_bias_table(table, 2, 2) is table


def test_create_and_set_input_size_pass_dynamic_is_unsupported(run_matrix):
    results = run_matrix(matrix())
    for path in ('create', 'set_input_size'):
        result = results[f'{MODEL}-timm-{TARGET}-{path}']
        assert result.status == 'passed', result.reason
        assert result.fidelity_weights_max_abs_diff < 1e-5 and result.shape_errors == []
    assert results[f'{MODEL}-timm-{TARGET}-set_input_size'].parity_max_abs_diff < 1e-5
    assert 'dynamic_img_size' in results[f'{MODEL}-timm-{TARGET}-dynamic'].reason
    assert results[f'{MODEL}-timm-{TARGET}-dynamic'].status == 'unsupported'


def test_a_table_resized_with_the_corners_aligned_fails_fidelity(run_matrix, monkeypatch):
    import timm.models.efficientvit_msra as effvit

    def corners_aligned(table, new_size, interpolation='bicubic', antialias=True):
        old, new = math.isqrt(table.shape[0]), math.isqrt(new_size[0])
        image = table.T.reshape(1, table.shape[1], old, old).float()
        return F.interpolate(image, size=(new, new), mode='bicubic', align_corners=True).flatten(2)[0].T
    monkeypatch.setattr(effvit, 'resize_rel_pos_bias_table_levit', corners_aligned)
    results = run_matrix(matrix('[create, set_input_size]'))
    for path in ('create', 'set_input_size'):
        result = results[f'{MODEL}-timm-{TARGET}-{path}']
        assert result.failed_checks == ['fidelity'], result.reason
        assert result.fidelity_worst_tensor.endswith('.attn.attention_biases')


def test_a_transposed_bias_index_fails_fidelity_on_the_expanded_bias(run_matrix, monkeypatch):
    """The tables load and resize right; the index that expands them pairs (|dx|, |dy|) instead: only the
    derived per-token-pair bias shows it (the native model too, so reload still holds)."""
    import timm.models.efficientvit_msra as effvit

    def transposed(self):
        y, x = (t.flatten() for t in torch.meshgrid(torch.arange(self.resolution), torch.arange(self.resolution),
                                                    indexing='ij'))
        index = (x[:, None] - x[None, :]).abs() * self.resolution + (y[:, None] - y[None, :]).abs()
        self.attention_bias_idxs.copy_(index)
    monkeypatch.setattr(effvit.CascadedGroupAttention, '_init_buffers', transposed)
    result, = run_matrix(matrix('[set_input_size]')).values()
    assert result.failed_checks == ['fidelity'] and result.native_max_abs_diff == 0.0
    assert result.fidelity_worst_tensor.endswith('attn.attention_biases[attention_bias_idxs]')


def test_a_window_not_clamped_to_the_stage_map_fails_shapes(run_matrix, monkeypatch):
    import timm.models.efficientvit_msra as effvit

    def unclamped(self, resolution):
        self.resolution = resolution
        self.attn.set_resolution(self.window_resolution)
    monkeypatch.setattr(effvit.LocalWindowAttention, 'set_input_size', unclamped)
    result, = run_matrix(matrix('[set_input_size]')).values()
    assert 'shapes' in result.failed_checks
    assert 'window_sizes: stored ((4, 4), (4, 4), (4, 4)), expected ((4, 4), (3, 3), (2, 2))' in result.shape_errors


def test_releases_without_set_input_size_leave_it_to_fixed_size(monkeypatch):
    import timm.models.efficientvit_msra as effvit

    from harness.families.probe import Probe
    monkeypatch.delattr(effvit.EfficientVitMsra, 'set_input_size')
    model = meta_model(ModelSpec(MODEL))
    assert FAMILIES['efficientvit_msra'].claim(Probe(MODEL, model)) == ''


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value
