"""The ViT variants, proven case by case: DeiT, DeiT-III, distilled (two prefix tokens), registers (with and
without embedded positions), no class token, FlexiViT (bilinear at create) and a hybrid, through create,
set_input_size and dynamic at a rectangular target; and who owns the edge cases."""
from __future__ import annotations

import torch

from harness.families import family_of, unclaimed_reason

TINY = 'embed_dim: 32, depth: 1, num_heads: 2, img_size: 48'
VARIANTS = {   # model: (prefix tokens, of them with a position in pos_embed)
    'deit_tiny_patch16_224': (1, 1),
    'deit3_small_patch16_224': (1, 0),              # no_embed_class
    'deit_tiny_distilled_patch16_224': (2, 2),      # VisionTransformerDistilled: class and distillation tokens
    'vit_base_patch16_reg4_gap_256': (4, 0),        # registers, no class token, positions for the grid only
    'vit_so150m_patch16_reg4_gap_256': (4, 4),      # registers whose positions are embedded
    'vit_medium_patch16_gap_240': (0, 0),           # no class token: global average pooling
    'flexivit_small': (1, 0),                       # timm loads it resampling bilinear, without antialiasing
}
HYBRID = '{name: vit_tiny_r_s16_p8_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64, sizes: [[64, 96]]}'
TARGET = '48x80'   # a 3x3 grid to 3x5


def matrix(models, paths: str = '[create, set_input_size, dynamic]', extra: str = '') -> str:
    entries = ', '.join(f'{{name: {m}, {TINY}}}' for m in models) + extra
    return f'name: variants\nmodels: [{entries}]\norigins: [timm]\nsizes: [[48, 80]]\npaths: {paths}\n'


def test_every_variant_and_a_hybrid_pass_every_path(run_matrix):
    results = run_matrix(matrix(VARIANTS, extra=f', {HYBRID}'))
    assert len(results) == 3 * (len(VARIANTS) + 1)
    failed = {case: result.reason for case, result in results.items() if result.status != 'passed'}
    assert failed == {}
    assert results[f'flexivit_small-timm-{TARGET}-create'].fidelity_weights_max_abs_diff < 1e-5
    assert 'bilinear without antialiasing' in results[f'flexivit_small-timm-{TARGET}-set_input_size'].parity_note
    assert family_of('vit_tiny_r_s16_p8_224').name == 'vit_hybrid'


def test_the_vit_family_reads_each_variants_prefix_tokens():
    from harness.families.base import native_geometry
    from harness.spec.matrix import ModelSpec
    for model, prefix in VARIANTS.items():   # the specs the matrix above built: their meta builds are cached
        spec = ModelSpec(model, (('depth', 1), ('embed_dim', 32), ('img_size', 48), ('num_heads', 2)))
        geometry = native_geometry(family_of(model), spec)
        assert family_of(model).name == 'vit'
        assert (geometry.num_prefix_tokens, geometry.pos_prefix_tokens) == prefix, model


def test_prefix_positions_resampled_with_the_grid_fail_fidelity_where_the_variant_embeds_them(run_matrix, monkeypatch):
    """A resample that splits prefix from grid at the right count but takes the wrong tokens: only the variants
    whose pos_embed holds prefix positions are resampled wrong, and only they fail."""
    import timm.models.vision_transformer as vit
    resample = vit.resample_abs_pos_embed

    def prefix_moved_behind_the_grid(posemb, new_size, old_size=None, num_prefix_tokens=1, **kwargs):
        if num_prefix_tokens:
            posemb = torch.cat([posemb[:, num_prefix_tokens:], posemb[:, :num_prefix_tokens]], dim=1)
        return resample(posemb, new_size, old_size, num_prefix_tokens, **kwargs)
    monkeypatch.setattr(vit, 'resample_abs_pos_embed', prefix_moved_behind_the_grid)
    results = run_matrix(matrix([m for m in VARIANTS if m != 'flexivit_small'], paths='[set_input_size]'))
    for model, (_, embedded) in VARIANTS.items():
        if model != 'flexivit_small':
            result = results[f'{model}-timm-{TARGET}-set_input_size']
            assert result.failed_checks == (['fidelity'] if embedded else []), (model, result.reason)


def test_a_flexivit_loaded_bicubic_fails_fidelity(run_matrix, monkeypatch):
    import timm.models.vision_transformer as vit
    resample = vit.resample_abs_pos_embed
    monkeypatch.setattr(vit, 'resample_abs_pos_embed', lambda *args, interpolation='bicubic', antialias=True,
                        **kwargs: resample(*args, **kwargs))   # timm's defaults: bicubic, antialiased
    result, = run_matrix(matrix(['flexivit_small'], paths='[create]')).values()
    assert result.failed_checks == ['fidelity'] and result.fidelity_worst_tensor == 'pos_embed'


def test_vitamin_a_hybrid_without_a_projection_is_vit_hybrids():
    assert family_of('vitamin_small_224').name == 'vit_hybrid'


def test_radio_v3_vits_resampled_with_corners_aligned_at_create_are_unknown_with_the_reason():
    assert family_of('vit_base_patch16_radio_v3') is None
    assert 'align_corners=True' in unclaimed_reason('vit_base_patch16_radio_v3')
