"""NaFlexVit: the position table resampled to every batch's grid (learned, factorized, aspect preserving, RADIO's
bilinear with corners aligned), checked on every path's outputs; each oracle proven against a wrong timm."""
from __future__ import annotations

import torch

from harness.families import family_of
from harness.reference.naflex_pos_embed import naflex_axis_table, naflex_pos_table

TINY = 'embed_dim: 32, depth: 1, num_heads: 2, img_size: 64'
MODELS = {
    'naflexvit_base_patch16_gap': f'{{name: naflexvit_base_patch16_gap, {TINY}, pos_embed_grid_size: [6, 6]}}',
    'naflexvit_base_patch16_parfac_gap': f'{{name: naflexvit_base_patch16_parfac_gap, {TINY}}}',
    'naflexvit_base_patch16_radio_v3': f'{{name: naflexvit_base_patch16_radio_v3, {TINY}, '
                                       f'pos_embed_grid_size: [8, 8]}}',
}
TARGET = '48x96'   # a 3x6 grid: wide, so aspect preservation and axis order both matter


def matrix(*models: str, paths: str = '[create, dynamic]') -> str:
    return (f'name: naflex\nmodels: [{", ".join(MODELS[m] for m in models)}]\norigins: [timm]\n'
            f'sizes: [[48, 96]]\npaths: {paths}\n')


def test_aspect_preserving_tables_are_a_band_of_the_square_resize():
    table = torch.randn(1, 4, 4, 3)
    band = naflex_pos_table(table, (2, 8), aspect_preserving=True)
    square = naflex_pos_table(table, (8, 8))
    assert band.shape == (1, 2, 8, 3) and torch.equal(band, square[:, :2])
    assert naflex_pos_table(table, (4, 4), aspect_preserving=True) is table
    rows = torch.randn(1, 4, 3)
    assert torch.equal(naflex_axis_table(rows, 2, 8, aspect_preserving=True), naflex_axis_table(rows, 8, 8)[:, :2])


def test_every_model_passes_create_and_dynamic_and_has_no_set_input_size(run_matrix):
    results = run_matrix(matrix(*MODELS, paths='[create, set_input_size, dynamic]'))
    for model in MODELS:
        assert family_of(model).name == 'naflexvit'
        for path in ('create', 'dynamic'):
            result = results[f'{model}-timm-{TARGET}-{path}']
            assert result.status == 'passed', result.reason
            assert result.fidelity_outputs_max_abs_diff < 1e-4 and result.shape_errors == []
        assert results[f'{model}-timm-{TARGET}-create'].fidelity_weights_max_abs_diff == 0.0
        dynamic = results[f'{model}-timm-{TARGET}-dynamic']   # the same model as create's: nothing to compare
        assert dynamic.parity_max_abs_diff is None and dynamic.parity_note.startswith('not judged: dynamic builds')
        set_input_size = results[f'{model}-timm-{TARGET}-set_input_size']
        assert set_input_size.status == 'unsupported' and 'no set_input_size' in set_input_size.reason


def test_a_table_resampled_as_if_the_grid_were_transposed_fails_fidelity(run_matrix, monkeypatch):
    from timm.models.naflexvit import NaFlexEmbeds
    apply = NaFlexEmbeds._apply_learned_pos_embed
    monkeypatch.setattr(NaFlexEmbeds, '_apply_learned_pos_embed', lambda self, x, grid_size:
                        apply(self, x, list(grid_size)[::-1]))
    results = run_matrix(matrix('naflexvit_base_patch16_gap'))
    for path in ('create', 'dynamic'):
        assert results[f'naflexvit_base_patch16_gap-timm-{TARGET}-{path}'].failed_checks == ['fidelity']


def test_tables_resized_without_aspect_preservation_or_aligned_corners_fail_fidelity(run_matrix, monkeypatch):
    """RADIO resizes to a square then crops, with corners aligned; the factorized model resizes each axis
    to the longer side: a timm that ignores either setting computes another model."""
    from timm.models.naflexvit import NaFlexEmbeds
    learned, factorized = NaFlexEmbeds._apply_learned_pos_embed, NaFlexEmbeds._apply_factorized_pos_embed

    def ignoring(apply, setting):
        def wrong(self, x, grid_size):
            saved, self.__dict__[setting] = self.__dict__[setting], False
            try:
                apply(self, x, grid_size)
            finally:
                self.__dict__[setting] = saved
        return wrong
    monkeypatch.setattr(NaFlexEmbeds, '_apply_learned_pos_embed', ignoring(learned, 'pos_embed_align_corners'))
    monkeypatch.setattr(NaFlexEmbeds, '_apply_factorized_pos_embed', ignoring(factorized, 'pos_embed_ar_preserving'))
    results = run_matrix(matrix('naflexvit_base_patch16_parfac_gap', 'naflexvit_base_patch16_radio_v3',
                                paths='[dynamic]'))
    for model in ('naflexvit_base_patch16_parfac_gap', 'naflexvit_base_patch16_radio_v3'):
        assert results[f'{model}-timm-{TARGET}-dynamic'].failed_checks == ['fidelity']


def test_the_family_sets_no_dynamic_img_size_and_keeps_a_set_table_as_it_is():
    family = family_of('naflexvit_base_patch16_gap')
    assert family.dynamic_kwargs() == {} and not family.patch_sizes_apply
    table = {'embeds.pos_embed': torch.randn(1, 16, 16, 8)}
    assert family.resample_state_dict(table, None, None, 'bicubic', True) == table
