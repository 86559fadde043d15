"""The relative-position families (BEiT, relative-position ViTs, MaxxViT): their geometry, every path timm supports at
a rectangular target against the harness's own oracles, and each oracle catching a deliberately wrong timm.

Models are tiny overrides (one or two blocks, 32-wide); two images per case.
"""
from __future__ import annotations

import pytest
import timm.models.beit as beit_module
import torch
from safetensors.torch import save_file
from timm.layers import pos_embed_rel

from harness.checkpoints import synthesize
from harness.checkpoints.synthesize import seeded_model
from harness.families import Target, family_of
from harness.families.base import native_geometry
from harness.spec.matrix import ModelSpec

pytestmark = [pytest.mark.filterwarnings('ignore:Using a non-tuple sequence:UserWarning'),
              pytest.mark.filterwarnings('ignore:torch.searchsorted:UserWarning')]

BEIT = '{name: beit_base_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: %s}'
RELPOS_MLP = '{name: vit_relpos_medium_patch16_cls_224, embed_dim: 32, depth: 1, num_heads: 2, rel_pos_dim: 16, ' \
             'img_size: 64}'
RELPOS_TABLE = '{name: vit_relpos_base_patch16_clsgap_224, embed_dim: 32, depth: 1, num_heads: 2, ' \
               'rel_pos_type: bias, img_size: 64}'
MAXVIT_TF = '{name: maxvit_tiny_tf_224, embed_dim: [32, 64, 64, 64], depths: [1, 1, 1, 1], stem_width: 16, ' \
            'head_hidden_size: 64, img_size: 96, sizes: [[96, 128]]}'
COATNET = '{name: test_coatnet, img_size: 64, sizes: [[96, 64]]}'


def matrix(models: list[str], sizes: str = '[[64, 96]]', paths: str = 'create, set_input_size') -> str:
    listed = ''.join(f'\n  - {m}' for m in models)
    return f'name: relpos\nmodels:{listed}\norigins: [timm]\nsizes: {sizes}\npaths: [{paths}]\nnum_images: 2\n'


@pytest.mark.parametrize('model, family', [
    ('beitv2_base_patch16_224', 'beit'), ('vit_srelpos_small_patch16_224', 'vit_relpos'),
    ('maxvit_tiny_pm_256', 'maxxvit'), ('coatnet_nano_cc_224', 'maxxvit'),
])
def test_family_of(model, family):
    assert family_of(model).name == family


def test_synthesized_tables_are_smooth_in_every_layout():
    """Swin's flat tables keep exactly the values they had; BEiT's class-token rows get values of the table's
    scale; a per-head table is the flat one per head. Neighbouring offsets differ far less than the table varies."""
    flat, with_class, per_head = torch.empty(5 * 9, 2), torch.empty(5 * 9 + 3, 2), torch.empty(2, 5, 9)
    swin = torch.empty(5 * 9, 2)
    for table, fill in ((flat, synthesize._smooth_rel_pos_table), (with_class, synthesize._smooth_rel_pos_table),
                        (per_head, synthesize._smooth_rel_pos_table), (swin, synthesize._smooth_rel_table)):
        fill(table, (3, 5), torch.Generator().manual_seed(0))
    assert torch.equal(flat, swin) and torch.equal(with_class[:45], swin)
    assert torch.equal(per_head, swin.T.reshape(2, 5, 9))
    assert ((0.5 <= with_class[45:]) & (with_class[45:] < 1.5)).all()
    step = (per_head[:, :, 1:] - per_head[:, :, :-1]).abs().mean()
    assert step < 0.5 * per_head.std()


def test_maxxvit_windows_per_stage_at_a_rectangular_target():
    """MaxViT's window and grid partitions are img_size // 32 in every stage; a CoAtNet transformer block's table
    covers its stage's feature map."""
    coatnet = ModelSpec('coatnet_nano_cc_224')
    family = family_of(coatnet.name)
    windows = dict(family.expected_geometry(native_geometry(family, coatnet), Target((256, 320))).rel_pos_windows)
    assert windows['stages.2.blocks.1.attn.rel_pos'] == (16, 20)
    assert windows['stages.3.blocks.1.attn.rel_pos'] == (8, 10)
    maxvit = ModelSpec('maxvit_tiny_pm_256')
    geometry = family.expected_geometry(native_geometry(family, maxvit), Target((256, 320)))
    assert set(dict(geometry.rel_pos_windows).values()) == {(8, 10)} and geometry.grid_size == (8, 10)
    assert family.size_problem(maxvit, (256, 336), None).startswith('256x336: each side must be a multiple of 32')


def test_every_path_timm_supports_passes_at_a_rectangular_target(run_matrix):
    """Tables resampled on the true windows (BEiT's class-token rows, TensorFlow MaxViT's per-head layout, a
    CoAtNet table per stage map) and every module's attention bias recomputed at its new window, MLPs included."""
    results = run_matrix(matrix([BEIT % 64, RELPOS_MLP, RELPOS_TABLE, MAXVIT_TF, COATNET],
                                paths='create, set_input_size, dynamic'))
    dynamic = [r for r in results.values() if r.path == 'dynamic']
    assert {r.status for r in dynamic} == {'unsupported'} and 'dynamic_img_size' in dynamic[0].reason
    checked = [r for r in results.values() if r.path != 'dynamic']
    assert len(checked) == 10
    for r in checked:
        assert r.status == 'passed', (r.case_id, r.reason)
        assert r.fidelity_weights_max_abs_diff < 1e-5 and r.shape_errors == []
        assert r.path == 'create' or r.parity_max_abs_diff < 1e-4 and r.noop_max_abs_diff == 0.0
    worst = {r.model: r.fidelity_worst_tensor for r in checked if r.path == 'create'}
    assert worst['vit_relpos_medium_patch16_cls_224'] == 'blocks.0.attn.rel_pos.attention_bias'   # an MLP's bias


def test_a_users_checkpoint_file_goes_through_the_same_paths(run_matrix, tmp_path):
    """A file origin is loaded as timm loads a hub file, and its own weights are the source of the oracle."""
    model = seeded_model('beit_base_patch16_224', {'embed_dim': 32, 'depth': 1, 'num_heads': 2, 'img_size': 64}, 3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'mine.safetensors'))
    text = matrix([BEIT % 64]).replace('origins: [timm]', f'origins: [{{file: {tmp_path / "mine.safetensors"}}}]')
    results = run_matrix(text)
    assert len(results) == 2 and {r.status for r in results.values()} == {'passed'}
    assert all(r.fidelity_weights_max_abs_diff < 1e-5 for r in results.values())


def _without_source_window(original):
    """timm's table resize, made to assume a square source window as its checkpoint loaders do."""
    def resize(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=None):
        return original(rel_pos_bias, new_window_size=new_window_size, new_bias_shape=new_bias_shape)
    return resize


def test_a_resize_that_assumes_a_square_source_window_fails(run_matrix, monkeypatch):
    """From a 2x4 grid (3x7 table offsets) timm's set_input_size passes the source window and is right; made to
    assume a square one it cannot resize. timm's create path infers the window itself and fails the same way."""
    text = matrix([BEIT % '[32, 64]'], sizes='[[64, 96]]')
    real = run_matrix(text)
    assert real['beit_base_patch16_224-timm-64x96-set_input_size'].status == 'passed'
    create = real['beit_base_patch16_224-timm-64x96-create']
    assert create.failed_checks == ['resize'] and 'Cannot infer non-square source window' in create.resize_error
    monkeypatch.setattr(beit_module, 'resize_rel_pos_bias_table', _without_source_window(
        beit_module.resize_rel_pos_bias_table))
    broken = run_matrix(text)['beit_base_patch16_224-timm-64x96-set_input_size']
    assert broken.failed_checks == ['resize'] and 'Cannot infer non-square source window' in broken.resize_error


def test_a_square_source_assumption_with_a_square_row_count_is_wrong_silently(run_matrix, monkeypatch):
    """A 2x14 grid's 3x27 offsets count like a 5x5 window's 9x9: timm's loader reads the table as 5x5 and
    resamples it, even at its own size, with no error. The oracle says so (reload at the own size, fidelity at
    the target); timm told the true source window passes."""
    text = matrix([BEIT % '[32, 224]'], sizes='[[64, 224]]', paths='create')
    real, = run_matrix(text).values()
    assert real.status == 'failed' and real.failed_checks == ['reload', 'fidelity']
    assert real.fidelity_worst_tensor.startswith('blocks.0.attn.') and real.fidelity_weights_max_abs_diff > 0.1
    original = beit_module.resize_rel_pos_bias_table

    def told(rel_pos_bias, new_window_size, new_bias_shape, old_window_size=None):
        return original(rel_pos_bias, new_window_size=new_window_size, new_bias_shape=new_bias_shape,
                        old_window_size=old_window_size or (2, 14))
    monkeypatch.setattr(beit_module, 'resize_rel_pos_bias_table', told)
    fixed, = run_matrix(text).values()
    assert fixed.status == 'passed', fixed.reason


def test_an_index_that_reads_offsets_backwards_fails_fidelity_on_the_bias(run_matrix, monkeypatch):
    """The tables are right and the state dict cannot tell; the attention bias they spread over the window can."""
    original = beit_module.gen_relative_position_index
    monkeypatch.setattr(beit_module, 'gen_relative_position_index', lambda window_size, device=None:
                        original(window_size, device=device).T.contiguous())
    result, = run_matrix(matrix([BEIT % 64], paths='set_input_size')).values()
    assert result.failed_checks == ['fidelity'] and result.fidelity_worst_tensor.endswith('.attention_bias')


def test_mlp_coordinates_of_the_wrong_mode_fail_fidelity(run_matrix, monkeypatch):
    """An MLP's bias is computed, not stored: Swin V2's normalised coordinates where timm's 'cr' ones are asked
    for give an MLP the wrong inputs, and only the derived bias shows it."""
    original = pos_embed_rel.gen_relative_log_coords
    monkeypatch.setattr(pos_embed_rel, 'gen_relative_log_coords', lambda win_size, pretrained_win_size=(0, 0),
                        mode='swin', **kwargs: original(win_size, pretrained_win_size, mode='swin', **kwargs))
    result, = run_matrix(matrix([RELPOS_MLP], paths='set_input_size')).values()
    assert result.failed_checks == ['fidelity']
    assert result.fidelity_worst_tensor == 'blocks.0.attn.rel_pos.attention_bias'
