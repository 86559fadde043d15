"""The eva family and its rotary-embedding oracle (harness.reference.rope): hand-worked embeddings on tiny grids,
timm's rope modules against the oracle, and proofs that fidelity catches a wrong rope (axes exchanged, 'ij' read
as 'xy', a rectangular grid rescaled as if square) on every build path while the real timm passes."""
from __future__ import annotations

import math

import pytest
import torch
from timm.layers import pos_embed_sincos

from harness.checkpoints.store import checkpoint_for
from harness.families import family_of
from harness.reference.rope import RopeConfig, rope_embedding
from harness.spec.cases import expand
from harness.spec.matrix import load_matrix

# fine-tuned at 4x4 patches (any grid is stretched onto 4x4); pooling the class token, as EVA-CLIP does, lets the
# rope reach the logits more than averaging every token would (the dynamic path is judged on logits)
EVA02 = ('{name: eva02_tiny_patch14_224, embed_dim: 32, num_heads: 2, depth: 1, img_size: 56, '
         'ref_feat_shape: [4, 4], global_pool: token}')
ROPE_MIXED = '{name: vit_small_patch16_rope_mixed_224, embed_dim: 32, num_heads: 2, depth: 1, img_size: 32}'
PE = '{name: vit_pe_core_tiny_patch16_384, embed_dim: 32, num_heads: 2, depth: 1, img_size: 32, ref_feat_shape: [2, 2]}'
DINOV3 = '{name: vit_small_patch16_dinov3, embed_dim: 32, num_heads: 2, depth: 1, img_size: 32, num_classes: 10}'


def _sin_cos(*angles: float) -> torch.Tensor:
    """One token's expected embedding: ``cat([sin, cos])`` of its channels' angles."""
    angles = torch.tensor(angles, dtype=torch.float64)
    return torch.cat([angles.sin(), angles.cos()]).float()


# --- the oracle against hand-worked values ------------------------------------------------------------------

def test_axial_rope_rotates_the_first_pair_by_the_row_and_the_second_by_the_column():
    """head_dim 4: two pairs, one band (omega 1). Tokens of a 2x3 grid in row-major order; token 5 is row 1,
    column 2. 'ij': pair 0 (channels 0, 1) turns by the row, pair 1 (channels 2, 3) by the column; 'xy' the
    other way round."""
    ij = rope_embedding(RopeConfig('axial', head_dim=4), (2, 3))
    assert ij.shape == (6, 8)
    torch.testing.assert_close(ij[5], _sin_cos(1, 1, 2, 2))
    torch.testing.assert_close(ij[2], _sin_cos(0, 0, 2, 2))
    torch.testing.assert_close(ij[3], _sin_cos(1, 1, 0, 0))
    xy = rope_embedding(RopeConfig('axial', head_dim=4, indexing='xy'), (2, 3))
    torch.testing.assert_close(xy[5], _sin_cos(2, 2, 1, 1))
    torch.testing.assert_close(xy[3], _sin_cos(0, 0, 1, 1))


def test_axial_rope_bands_offset_reference_grid_and_half_layout():
    """head_dim 8: bands 1 and T^-1/2 (T = 100: 0.1). With an offset of 1 and a 4x12 reference grid, a 2x3
    grid's token 5 (row 1, column 2) sits at row (1 + 1) * 4/2 = 4, column (2 + 1) * 12/3 = 12."""
    config = RopeConfig('axial', head_dim=8, temperature=100, grid_offset=1.0, ref_grid=(4, 12))
    row, col = 4.0, 12.0
    torch.testing.assert_close(rope_embedding(config, (2, 3))[5],
                               _sin_cos(row, row, row / 10, row / 10, col, col, col / 10, col / 10))
    half = RopeConfig('axial', head_dim=8, temperature=100, grid_offset=1.0, ref_grid=(4, 12), rotate_half=True)
    torch.testing.assert_close(rope_embedding(half, (2, 3))[5],
                               _sin_cos(row, row / 10, col, col / 10, row, row / 10, col, col / 10))


def test_dinov3_rope_uses_patch_centres_normalised_to_minus_one_one():
    """A 2x4 grid: row centres -1/2, 1/2 and column centres -3/4, -1/4, 1/4, 3/4; head_dim 4, one band of
    period 1 (2 pi radians per unit), half layout. Token 4 (row 1, column 0): angles pi and -3/2 pi."""
    config = RopeConfig('dinov3', head_dim=4, temperature=100, rotate_half=True)
    torch.testing.assert_close(rope_embedding(config, (2, 4))[4], _sin_cos(math.pi, -1.5 * math.pi, math.pi,
                                                                             -1.5 * math.pi))
    torch.testing.assert_close(rope_embedding(config, (2, 4))[4], torch.tensor([0., 1., 0., 1., -1., 0., -1., 0.]),
                               atol=1e-6, rtol=0)


def test_mixed_rope_adds_learned_frequencies_times_both_coordinates():
    """One block, one head, head_dim 4 (two pairs): pair 0 turns by 1 * x, pair 1 by 0.5 * x + 2 * y. In a 2x3
    grid token 5 is x = 2 (column), y = 1 (row) for 'xy': angles 2 and 3; 'ij' reads x as the row: 1 and 4.5."""
    freqs = torch.tensor([[1.0, 0.5], [0.0, 2.0]]).reshape(2, 1, 1, 2)
    xy = rope_embedding(RopeConfig('mixed', head_dim=4, indexing='xy'), (2, 3), freqs)
    assert xy.shape == (1, 1, 6, 8)
    torch.testing.assert_close(xy[0, 0, 5], _sin_cos(2, 2, 3, 3))
    ij = rope_embedding(RopeConfig('mixed', head_dim=4), (2, 3), freqs)
    torch.testing.assert_close(ij[0, 0, 5], _sin_cos(1, 1, 4.5, 4.5))


def test_rope_config_rejects_what_it_cannot_define():
    with pytest.raises(ValueError, match='divisible by 4'):
        RopeConfig('axial', head_dim=6)
    with pytest.raises(ValueError, match='learned frequencies'):
        rope_embedding(RopeConfig('mixed', head_dim=4), (2, 2))


# --- the oracle against timm's rope modules -----------------------------------------------------------------

@pytest.mark.parametrize('indexing', ['ij', 'xy'])
def test_timm_rope_modules_match_the_oracle_on_a_rectangular_grid(indexing):
    grid = (3, 5)
    axial = pos_embed_sincos.RotaryEmbeddingCat(16, temperature=100, in_pixels=False, ref_feat_shape=(4, 6),
                                                grid_offset=1.0, grid_indexing=indexing)
    torch.testing.assert_close(axial.get_embed(grid), rope_embedding(
        RopeConfig('axial', 16, 100, indexing, 1.0, (4, 6)), grid), atol=1e-6, rtol=0)
    mixed = pos_embed_sincos.RotaryEmbeddingMixed(32, depth=2, num_heads=2, grid_indexing=indexing)
    torch.testing.assert_close(mixed.get_embed(grid), rope_embedding(
        RopeConfig('mixed', 16, indexing=indexing), grid, mixed.freqs.detach()), atol=1e-6, rtol=0)
    dinov3 = pos_embed_sincos.RotaryEmbeddingDinoV3(16, temperature=100, grid_indexing=indexing)
    torch.testing.assert_close(dinov3.get_embed(grid), rope_embedding(
        RopeConfig('dinov3', 16, 100, indexing, rotate_half=True), grid), atol=1e-6, rtol=0)


# --- the family through every path -------------------------------------------------------------------------

def _matrix(model: str, size: str = '[56, 112]', paths: str = '[create, set_input_size, dynamic]') -> str:
    return f'name: eva\nmodels: [{model}]\norigins: [timm]\nsizes: [{size}]\npaths: {paths}\n'


@pytest.mark.parametrize('model, size', [(EVA02, '[56, 112]'), (ROPE_MIXED, '[32, 64]'), (PE, '[64, 32]'),
                                         (DINOV3, '[32, 64]')], ids=['eva02', 'rope_mixed', 'pe', 'dinov3'])
def test_real_timm_passes_every_path_at_a_rectangular_target(run_matrix, model, size):
    results = run_matrix(_matrix(model, size))
    assert len(results) == 3
    for case_id, result in results.items():
        assert result.status == 'passed', f'{case_id}: {result.reason}'
        if result.path == 'dynamic':
            assert result.fidelity_outputs_max_abs_diff < 1e-4
        else:
            assert result.fidelity_weights_max_abs_diff < 1e-5


@pytest.fixture
def synthesized(write_matrix, known_models, cache_dir):
    """Synthesize a matrix's checkpoints with the real timm, before a test breaks it (synthesis runs a forward)."""
    def synthesize(text: str) -> str:
        matrix = load_matrix(write_matrix(text), known_models)
        for case in expand(matrix):
            checkpoint_for(case.model, case.origin, matrix.seed, cache_dir)
        return text
    return synthesize


def _break_grid(monkeypatch, wrong) -> None:
    """Replace the coordinate grid every timm rope builds from (``_build_grid``) with ``wrong(original, ...)``."""
    original = pos_embed_sincos._build_grid
    monkeypatch.setattr(pos_embed_sincos, '_build_grid', lambda *args, **kwargs: wrong(original, *args, **kwargs))


def _assert_fidelity_fails_on(results, paths) -> None:
    """Every case fails fidelity alone, the static paths on the rope itself, the dynamic path (whose rope is
    computed inside the forward pass) on its logits, well beyond the 1e-3 tolerance."""
    for case_id, result in results.items():
        assert result.path in paths
        assert result.status == 'failed' and result.failed_checks == ['fidelity'], f'{case_id}: {result.reason}'
        if result.path == 'dynamic':
            assert result.fidelity_outputs_max_abs_diff > 1e-2
        else:
            assert result.fidelity_worst_tensor == 'rope.embedding' and result.fidelity_weights_max_abs_diff > 0.1


def test_fidelity_catches_the_grid_built_with_height_and_width_exchanged(run_matrix, synthesized, monkeypatch):
    """Positions of a (W, H) grid handed out in (H, W) token order: the right token count, every token moved."""
    text = synthesized(_matrix(EVA02))
    assert family_of('eva02_tiny_patch14_224').name == 'eva'
    _break_grid(monkeypatch, lambda original, feat_shape, *args, **kwargs: original(
        list(feat_shape)[::-1], *args, **kwargs))
    _assert_fidelity_fails_on(run_matrix(text), ('create', 'set_input_size', 'dynamic'))


def test_fidelity_catches_xy_indexing_read_as_ij(run_matrix, synthesized, monkeypatch):
    """RoPE-Mixed ('xy'): its learned x frequencies applied to rows. Square grids are not spared."""
    text = synthesized(_matrix(ROPE_MIXED, size='48', paths='[create, dynamic]'))
    _break_grid(monkeypatch, lambda original, *args, **kwargs: original(*args, **{**kwargs, 'grid_indexing': 'ij'}))
    _assert_fidelity_fails_on(run_matrix(text), ('create', 'dynamic'))


def _rescaled_as_square(original, feat_shape, *args, ref_feat_shape=None, **kwargs):
    """EVA-02's stretch onto the reference grid with the height's ratio on both axes ('ij' models)."""
    if ref_feat_shape is not None:
        ref_feat_shape = [ref_feat_shape[0], ref_feat_shape[1] * feat_shape[1] / feat_shape[0]]
    return original(feat_shape, *args, ref_feat_shape=ref_feat_shape, **kwargs)


def test_fidelity_catches_a_rectangular_grid_rescaled_as_if_square(run_matrix, synthesized, monkeypatch):
    rectangular, square = synthesized(_matrix(EVA02, paths='[create, dynamic]')), _matrix(EVA02, size='84',
                                                                                           paths='[create]')
    _break_grid(monkeypatch, _rescaled_as_square)
    _assert_fidelity_fails_on(run_matrix(rectangular), ('create', 'dynamic'))
    result, = run_matrix(square).values()
    assert result.status == 'passed', result.reason   # the bug cannot show on a square grid
