"""What timm accepts is expressible, and judged (issue 19): a Swin at a size whose stage maps do not tile, a
hybrid's projection patch, a model built as NaFlexVit from another family (``use_naflex``); an axis a family
cannot apply is a matrix error (tests/test_matrix.py), never dropped."""
from __future__ import annotations

import pytest
import timm.layers
import timm.models.swin_transformer as swin_module

from harness.families import family_of
from harness.spec.matrix import ModelSpec
from tests.test_cli import harness, records

SWIN_ODD = '''
name: swin-odd
models:
  - {name: swin_tiny_patch4_window7_224, embed_dim: 16, depths: [2, 2, 2], num_heads: [1, 2, 2], img_size: 64,
     window_size: 4}
origins: [timm]
sizes: [[64, 72]]       # patch grid 16x18: stage maps 16x18, 8x9, 4x5 (window 4: the last stage shifts its width)
num_images: 2
'''
HYBRID_PATCH4 = '''
name: hybrid-patch4
models: [{name: vit_tiny_r_s16_p8_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64}]
origins: [timm]
sizes: [[64, 96]]
patch_sizes: [4]        # the projection's 8x8 kernel over the CNN's map (stride 4) to 4x4: a 4x6 grid
paths: [create, set_input_size]
num_images: 2
expect:                 # timm 1.0.31 leaves feature_info at the creation patch (tests/test_states.py)
  - {match: {path: set_input_size}, checks: [features], reason: feature_info keeps patch 8's reduction}
'''
DINOV3 = 'vit_small_patch16_dinov3'
NAFLEX_DINOV3 = f'''
name: dinov3-naflex
models: [{{name: {DINOV3}, use_naflex: true, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64}}]
origins: [timm]
sizes: [[64, 96]]
paths: [create, dynamic]
num_images: 2
'''


def test_swin_at_a_size_whose_stage_maps_do_not_tile_runs_and_is_judged(run_matrix):
    results = run_matrix(SWIN_ODD)
    assert {r.status for r in results.values()} == {'passed'}, {k: r.reason for k, r in results.items()}
    create = results['swin_tiny_patch4_window7_224-timm-64x72-create']
    assert create.fidelity_weights_max_abs_diff is not None   # the masks and windows of 4x5 compared, not skipped


def test_a_last_stage_left_unshifted_at_an_odd_size_is_caught(run_matrix, monkeypatch):
    """timm 1.0.10-1.0.30 halved each stage's map rounding down (8x9 -> 4x4 where patch merging gives 4x5), so a
    4-wide window covered the last stage and it was left unshifted (logits off by 0.05): the mutant does that."""
    stage = swin_module.SwinTransformerStage
    init, resize = stage.__init__, stage.set_input_size

    def even(size):
        return tuple(s - s % 2 for s in size)

    def flooring_init(self, *args, input_resolution, downsample=True, **kwargs):
        init(self, *args, input_resolution=even(input_resolution) if downsample else input_resolution,
             downsample=downsample, **kwargs)

    def flooring_resize(self, feat_size, *args, **kwargs):
        resize(self, even(feat_size) if self.downsample is not None and
               not isinstance(self.downsample, swin_module.nn.Identity) else feat_size, *args, **kwargs)
    monkeypatch.setattr(stage, '__init__', flooring_init)
    monkeypatch.setattr(stage, 'set_input_size', flooring_resize)
    results = run_matrix(SWIN_ODD.replace('num_images', 'paths: [create, set_input_size]\nnum_images'))
    for path in ('create', 'set_input_size'):
        result = results[f'swin_tiny_patch4_window7_224-timm-64x72-{path}']
        assert result.status == 'failed' and 'shapes' in result.failed_checks, result.reason
        assert 'shift_sizes: stored ((2, 2), (2, 2), (0, 0)), expected ((2, 2), (2, 2), (0, 2))' in result.reason


def test_hybrid_patch_sizes_run_set_input_size_with_the_patch(run_matrix, monkeypatch):
    asked = []
    resize = timm.layers.HybridEmbed.set_input_size

    def recording(self, img_size=None, patch_size=None, **kwargs):
        asked.append(patch_size)
        return resize(self, img_size=img_size, patch_size=patch_size, **kwargs)
    monkeypatch.setattr(timm.layers.HybridEmbed, 'set_input_size', recording)
    results = run_matrix(HYBRID_PATCH4)
    assert {r.path: (r.status, r.failed_checks) for r in results.values()} == {
        'create': ('passed', []), 'set_input_size': ('xfailed', ['features'])}, \
        {k: r.reason for k, r in results.items()}
    assert 4 in asked
    for result in results.values():
        assert result.source_patch_size == 8 and result.fidelity_worst_tensor == 'patch_embed.proj.weight'


def test_a_hybrid_patch_kernel_resampled_without_antialiasing_is_caught(run_matrix, monkeypatch):
    """set_input_size documents resample_patch_embed's default (bicubic, antialiased): a HybridEmbed that drops
    the antialiasing moves the 8x8 -> 4x4 projection kernel, and fidelity sees it."""
    import timm.layers.hybrid_embed as hybrid_module
    resample = hybrid_module.resample_patch_embed
    monkeypatch.setattr(hybrid_module, 'resample_patch_embed',
                        lambda *args, **kwargs: resample(*args, **{**kwargs, 'antialias': False}))
    results = run_matrix(HYBRID_PATCH4)
    assert results['vit_tiny_r_s16_p8_224-timm-64x96-patch4-create'].status == 'passed'   # the loader's own resample
    result = results['vit_tiny_r_s16_p8_224-timm-64x96-patch4-set_input_size']
    assert result.status == 'failed' and result.failed_checks == ['features', 'fidelity'], result.reason
    assert result.fidelity_worst_tensor == 'patch_embed.proj.weight'


def test_a_model_built_as_naflexvit_from_another_family_is_naflexvits(run_matrix):
    """The class the overrides build decides the family: DINOv3 (an Eva) with use_naflex=True is a NaFlexVit."""
    own = dict(embed_dim=32, depth=1, num_heads=2, img_size=64)
    assert family_of(DINOV3).name == family_of(ModelSpec.of(DINOV3, own)).name == 'eva'
    assert family_of(ModelSpec.of(DINOV3, {**own, 'use_naflex': True})).name == 'naflexvit'
    results = run_matrix(NAFLEX_DINOV3)
    assert {r.status for r in results.values()} == {'passed'}, {k: r.reason for k, r in results.items()}
    assert all(r.fidelity_outputs_max_abs_diff is not None for r in results.values())


EVA_PADDED = '''
name: eva-padded
models:
  - {name: eva02_tiny_patch14_224, embed_dim: 32, num_heads: 2, depth: 1, img_size: 56, ref_feat_shape: [4, 4],
     dynamic_img_pad: true}
origins: [timm]
sizes: [[60, 70]]       # padded to 70x70: a 5x5 grid (rope for 5x5, stretched onto 4x4)
paths: [dynamic]
num_images: 2
'''


def test_an_eva_built_with_dynamic_img_pad_is_judged_at_a_size_no_patch_divides(run_matrix, monkeypatch):
    """The eva oracle models padding as the vit one does (the model built at the padded size, fed inputs the
    harness pads, the harness's rope for the padded grid): dynamic_img_size passes on timm 1.0.31, and a
    PatchEmbed that pads left and top instead is caught."""
    from tests.test_triggers import _PadLeftTop
    result, = run_matrix(EVA_PADDED).values()
    assert result.status == 'passed', result.reason
    assert result.fidelity_outputs_max_abs_diff is not None
    monkeypatch.setattr(timm.layers.patch_embed, 'F', _PadLeftTop())
    result, = run_matrix(EVA_PADDED).values()
    assert result.status == 'failed' and result.failed_checks == ['fidelity'], result.reason


@pytest.mark.slow
@pytest.mark.parametrize('release, create, set_input_size', [
    ('1.0.8', 'RuntimeError', 'RuntimeError'),   # forward_intermediates: a 9-wide map reshaped into 2x2 windows
    ('1.0.11', 'shift_sizes: stored ((2, 2), (2, 2), (0, 0)), expected ((2, 2), (2, 2), (0, 2))',
     'shift_sizes: stored ((2, 2), (2, 2), (0, 0)), expected ((2, 2), (2, 2), (0, 2))'),
    ('1.0.30', 'shift_sizes: stored ((2, 2), (2, 2), (0, 0)), expected ((2, 2), (2, 2), (0, 2))',
     'shift_sizes: stored ((2, 2), (2, 2), (0, 0)), expected ((2, 2), (2, 2), (0, 2))'),
], ids=['1.0.8', '1.0.11', '1.0.30'])
def test_old_releases_fail_swin_at_an_odd_size(write_matrix, tmp_path, release_cache, release, create,
                                               set_input_size):
    done = harness('run', write_matrix(SWIN_ODD), '--timm', release, '--out', tmp_path, '--cache', release_cache,
                   '--no-timing')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    by_path = {r['path']: r for r in records(tmp_path)}
    assert by_path['create']['status'] == by_path['set_input_size']['status'] == 'failed'
    assert create in by_path['create']['reason'] and set_input_size in by_path['set_input_size']['reason']
    assert by_path['dynamic']['status'] == 'unsupported'   # these Swins swallow dynamic_img_size


@pytest.mark.slow
def test_timm_1_0_30_hybrid_patch_change_raises(write_matrix, tmp_path, release_cache):
    done = harness('run', write_matrix(HYBRID_PATCH4), '--timm', '1.0.30', '--out', tmp_path, '--cache',
                   release_cache, '--no-timing')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    by_path = {r['path']: r for r in records(tmp_path)}
    assert by_path['create']['status'] == 'passed', by_path['create']['reason']
    assert by_path['set_input_size']['failed_checks'] == ['resize']
    assert "patch_size=4) raised AttributeError: 'Conv2d' object has no attribute 'device'" in \
        by_path['set_input_size']['reason']
