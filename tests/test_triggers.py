"""Trigger sets (harness.spec.triggers): what `targets:` expands into at validation, the refusals, and the ViT oracle's
model of dynamic_img_pad. Models are built on the meta device, except two tiny ViTs for the padding oracle."""
from __future__ import annotations

import textwrap

import pytest
import timm
import torch
import torch.nn.functional as F

from harness.families import Target, family_of
from harness.reference.padding import pad_right_bottom
from harness.spec.cases import expand
from harness.spec.matrix import MatrixError, ModelSpec, load_matrix

VIT = 'vit_tiny_patch16_224'
TINY_VIT = 'embed_dim: 32, depth: 1, num_heads: 2'
SWIN = 'swin_tiny_patch4_window7_224'
TINY_SWIN = 'embed_dim: 16, depths: [2, 2, 2], num_heads: [1, 2, 2], img_size: 64, window_size: 4'


def load(tmp_path, models: str, known_models, extra: str = ''):
    path = tmp_path / 'triggers.yaml'
    path.write_text(textwrap.dedent(f'name: t\nmodels:\n{models}\norigins: [timm]\n{extra}'))
    return load_matrix(path, known_models=known_models)


def case_ids(matrix) -> list[str]:
    return [case.case_id for case in expand(matrix)]


def matrix_error(tmp_path, models: str, known_models, extra: str = '') -> MatrixError:
    with pytest.raises(MatrixError) as info:
        load(tmp_path, models, known_models, extra)
    return info.value


def test_auto_expands_a_vit_into_its_trigger_set_from_its_own_geometry(tmp_path, known_models):
    matrix = load(tmp_path, f'  - {{name: {VIT}, {TINY_VIT}, img_size: 64, targets: auto}}', known_models)
    own, rect, pad = matrix.models
    assert (own.label, rect.label, pad.label) == (VIT, f'{VIT}-src64x96', f'{VIT}-pad')
    # each variant is the entry's configuration plus what its triggers need
    assert own.kwargs['img_size'] == 64 and rect.kwargs['img_size'] == (64, 96)
    assert pad.kwargs['dynamic_img_pad'] is True and 'dynamic_img_pad' not in own.kwargs
    kinds = {t.kind: t.target for m in matrix.models for t in dict(m.axes)['targets']}
    assert kinds == {'larger': Target((96, 96)), 'smaller': Target((32, 32)), 'rectangular': Target((64, 96)),
                     'square': Target((96, 96)), 'transposed': Target((96, 64)),
                     'patch': Target((64, 64), patch_size=8), 'img_pad': Target((72, 84))}
    ids = case_ids(matrix)
    assert len(ids) == len(set(ids)) == 20   # 6 size targets x 3 paths, the patch change without dynamic
    assert f'{VIT}-src64x96-timm-96x64-create' in ids and f'{VIT}-src64x96-timm-96x64-set_input_size' in ids
    assert f'{VIT}-pad-timm-72x84-dynamic' in ids
    assert f'{VIT}-timm-64x64-patch8-set_input_size' in ids and f'{VIT}-timm-64x64-patch8-dynamic' not in ids
    assert case_ids(load(tmp_path, f'  - {{name: {VIT}, {TINY_VIT}, img_size: 64, targets: auto}}',
                         known_models)) == ids   # deterministic


def test_a_rectangular_source_is_its_own_transposed_trigger(tmp_path, known_models):
    matrix = load(tmp_path, f'  - {{name: {VIT}, label: wide, {TINY_VIT}, img_size: [64, 96], '
                            f'targets: [transposed, square], paths: [create]}}', known_models)
    assert [m.label for m in matrix.models] == ['wide']
    assert case_ids(matrix) == ['wide-timm-96x96-create', 'wide-timm-96x64-create']


def test_swin_windows_rectangular_and_per_stage(tmp_path, known_models):
    matrix = load(tmp_path, f'  - {{name: {SWIN}, {TINY_SWIN}, targets: [window, window_rect, window_per_stage]}}',
                  known_models)
    own, per_stage = matrix.models
    assert per_stage.label == f'{SWIN}-windows4-2-2'
    assert per_stage.kwargs['window_size'] == ((4, 4), (2, 2), (2, 2))
    assert case_ids(matrix) == [
        f'{SWIN}-timm-64x64-window2-create', f'{SWIN}-timm-64x64-window2-set_input_size',
        f'{SWIN}-timm-64x64-window2x4-create', f'{SWIN}-timm-64x64-window2x4-set_input_size',
        *(f'{SWIN}-windows4-2-2-timm-96x96-{path}' for path in ('create', 'set_input_size', 'dynamic'))]


def test_a_rectangular_window_source_goes_to_its_transpose_and_to_a_square_window(tmp_path, known_models):
    """The checkpoint timm 1.0.31 mishandles (matrices/zoo-swin.yaml): a 2x4-window table read as a 4x2 window's
    on create, and not resampled to window 2 at all."""
    matrix = load(tmp_path, f'  - {{name: {SWIN}, {TINY_SWIN}, targets: [window_rect_source]}}', known_models)
    source, = matrix.models
    assert source.label == f'{SWIN}-window2x4' and source.kwargs['window_size'] == (2, 4)
    assert case_ids(matrix) == [f'{SWIN}-window2x4-timm-64x64-window4x2-create',
                                f'{SWIN}-window2x4-timm-64x64-window4x2-set_input_size',
                                f'{SWIN}-window2x4-timm-64x64-window2-create',
                                f'{SWIN}-window2x4-timm-64x64-window2-set_input_size']


def test_a_naflexvit_rectangular_source_has_a_rectangular_table(tmp_path, known_models):
    """NaFlexVit's checkpoint is its table: a source trained at 64x96 has a 4x6 table (which a classic ViT release
    carries flat, and timm 1.0.31 reshapes only when square), not the 4x4 one of its own size."""
    matrix = load(tmp_path, '  - {name: naflexvit_base_patch16_gap, embed_dim: 32, depth: 1, num_heads: 2, '
                            'img_size: 64, pos_embed_grid_size: [4, 4], targets: [transposed]}', known_models)
    source, = matrix.models
    assert source.label == 'naflexvit_base_patch16_gap-src64x96'
    assert tuple(source.kwargs['img_size']) == (64, 96) and tuple(source.kwargs['pos_embed_grid_size']) == (4, 6)


def test_a_trigger_the_model_cannot_take_is_left_out_with_the_reason(tmp_path, known_models):
    # Swin-V2-CR built without a window takes its windows from the grid: there is no window to change
    matrix = load(tmp_path, '  - {name: swinv2_cr_tiny_ns_224, embed_dim: 16, depths: [2, 2], num_heads: [1, 2], '
                            'img_size: 128, targets: [larger, window]}', known_models)
    assert case_ids(matrix)[0] == 'swinv2_cr_tiny_ns_224-timm-192x192-create'
    assert any('models[0].targets' in line and 'no window target' in line for line in matrix.left_out)


@pytest.mark.parametrize('entry, fragments', [
    ('{name: mixer_s16_224, targets: auto}', ('mixer_s16_224', 'the fixed_size family declares no triggers')),
    (f'{{name: {VIT}, {TINY_VIT}, targets: [transposed, window]}}', ("'window'", 'vit family', 'img_pad')),
    (f'{{name: {VIT}, {TINY_VIT}, targets: 5}}', ('expected auto or a list of trigger names', 'got 5')),
    (f'{{name: {VIT}, {TINY_VIT}, targets: auto, sizes: [96]}}', ('replaces sizes', 'drop')),
])
def test_bad_targets_are_one_line_matrix_errors_naming_file_and_field(tmp_path, known_models, entry, fragments):
    err = matrix_error(tmp_path, f'  - {entry}', known_models, 'sizes: [96]\n')
    assert str(err).startswith(str(tmp_path / 'triggers.yaml'))
    lines = [p for p in err.problems if p.startswith('models[0].targets: ')]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), err.problems


def test_dynamic_img_pad_sizes_are_accepted_where_the_oracle_models_padding(tmp_path, known_models):
    matrix = load(tmp_path, f'  - {{name: {VIT}, {TINY_VIT}, img_size: 64, dynamic_img_pad: true}}', known_models,
                  'sizes: [[72, 84]]\n')
    assert case_ids(matrix)[0] == f'{VIT}-timm-72x84-create'
    eva = load(tmp_path, '  - {name: eva02_tiny_patch14_224, embed_dim: 32, num_heads: 2, depth: 1, img_size: 56, '
                         'dynamic_img_pad: true}', known_models, 'sizes: [64]\n')
    assert case_ids(eva)[0] == 'eva02_tiny_patch14_224-timm-64x64-create'
    err = matrix_error(tmp_path, '  - {name: vit_tiny_r_s16_p8_224, embed_dim: 32, num_heads: 2, depth: 1, '
                                 'img_size: 64, dynamic_img_pad: true}', known_models, 'sizes: [72]\n')
    assert len(err.problems) == 1 and 'multiple of 32x32' in err.problems[0]
    assert "the vit_hybrid family's oracle does not model padded inputs" in err.problems[0]


def test_the_padded_grid_is_ceil_and_padding_is_right_and_bottom():
    vit = family_of(VIT)
    with torch.device('meta'):
        model = timm.create_model(VIT, img_size=64, dynamic_img_pad=True, embed_dim=32, depth=1, num_heads=2)
    source = vit.geometry(model)
    assert source.img_pad and vit.expected_geometry(source, Target((72, 84))).grid_size == (5, 6)
    images = torch.ones(1, 1, 3, 5)
    padded = pad_right_bottom(images, (2, 4))
    assert padded.shape[-2:] == (4, 8) and padded[..., :3, :5].eq(1).all() and padded[..., 3:, :].eq(0).all() \
        and padded[..., :, 5:].eq(0).all()


class _PadLeftTop:
    """torch.nn.functional as timm's patch_embed sees it, except that pad puts the padding left and top: a
    plausible slip in PatchEmbed's dynamic_img_pad."""

    def __getattr__(self, name):
        return getattr(F, name)

    @staticmethod
    def pad(x, pad, *args, **kwargs):
        return F.pad(x, (pad[1], pad[0], pad[3], pad[2]), *args, **kwargs)


@torch.no_grad()
def test_the_padding_oracle_matches_timm_and_catches_padding_on_the_wrong_side(monkeypatch):
    """The dynamic path's reference for a dynamic_img_pad model agrees with timm 1.0.31 (0 on a CPU) and differs
    from a timm that pads left and top by 0.11, 100x the default fidelity_outputs_atol (1e-3)."""
    vit = family_of(VIT)
    kwargs = dict(img_size=64, dynamic_img_pad=True, embed_dim=32, depth=1, num_heads=2)
    torch.manual_seed(0)
    source_model = timm.create_model(VIT, **kwargs).eval()
    source = vit.geometry(source_model)
    computed = vit.computed_geometry(source, Target((72, 84)), 'dynamic')
    weights = vit.resample_state_dict(source_model.state_dict(), source, computed, 'bicubic', True)
    reference = vit.dynamic_reference(source_model, ModelSpec.of(VIT, kwargs), source, computed, weights)
    images = torch.randn(2, 3, 72, 84)
    want = reference.forward_head(reference.forward_features(images))

    dynamic = timm.create_model(VIT, **kwargs, dynamic_img_size=True).eval()
    dynamic.load_state_dict(source_model.state_dict())
    assert (dynamic(images) - want).abs().max() < 1e-5
    monkeypatch.setattr(timm.layers.patch_embed, 'F', _PadLeftTop())
    assert (dynamic(images) - want).abs().max() > 1e-2
