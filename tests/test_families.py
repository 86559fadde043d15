"""Which family a timm model is in (matched by class, or proven by a meta-device forward pass), what the cnn and
fixed_size families check, and `harness coverage`."""
from __future__ import annotations

import json
import logging

import pytest
import torch

import harness.families
from harness.cli import main
from harness.families import FAMILIES, families, family_of, register_family, unclaimed_reason
from harness.families.base import Family
from harness.families.cnn import CnnFamily
from harness.families.probe import probe
from tests.test_cli import harness as harness_cli

CNN = 'test_resnet'   # timm's own tiny ResNet: 0.5M parameters, 160x160, feature strides 2..32


@pytest.mark.parametrize('model, family', [
    ('vit_tiny_patch16_224', 'vit'),
    ('deit3_small_patch16_224', 'vit'),            # a VisionTransformer registered in deit.py
    ('deit_tiny_distilled_patch16_224', 'vit'),    # VisionTransformerDistilled: a subclass, two prefix tokens
    ('vit_tiny_r_s16_p8_224', 'vit_hybrid'),       # a HybridEmbed: a CNN before the patches
    ('swin_tiny_patch4_window7_224', 'swin'),
    ('eva02_tiny_patch14_224', 'eva'), ('vit_small_patch16_rope_mixed_224', 'eva'), ('vit_small_patch16_dinov3', 'eva'),
    ('resnet18', 'cnn'), ('convnext_atto', 'cnn'), ('efficientnet_b0', 'cnn'), (CNN, 'cnn'),
    ('mambaout_femto', 'cnn'), ('sequencer2d_s', 'cnn'),                   # NHWC features (output_fmt)
    ('xcit_nano_12_p16_224', 'cnn'), ('twins_pcpvt_small', 'cnn'),        # token features (TOKEN_OUTPUTS)
    ('mixer_s16_224', 'fixed_size'), ('cait_xxs24_224', 'fixed_size'), ('levit_128', 'fixed_size'),
    ('crossvit_tiny_240', 'fixed_size'),            # scales any input back to 240x240: its features never change
])
def test_family_of(model, family):
    assert family_of(model).name == family


@pytest.mark.parametrize('model, why', [
    ('mvitv2_tiny', 'forward_features gives (1, 120, 768)'),   # token outputs on no grid it can name
    ('vit_base_patch16_radio_v3', 'align_corners=True'),
])
def test_models_no_family_claims_say_why(model, why):
    assert family_of(model) is None and why in unclaimed_reason(model)


def test_a_family_joins_by_registering(monkeypatch):
    """A new family module needs nothing but @register_family: it claims the classes it names, ahead of the
    fallbacks by rank."""
    class ResNetFamily(CnnFamily):
        name, rank, model_classes = 'resnet_only', 5, ('timm.models.resnet.ResNet',)

        def claim(self, probe):
            return Family.claim(self, probe)
    monkeypatch.setitem(FAMILIES, 'resnet_only', None)
    register_family(ResNetFamily)
    harness.families._claim.cache_clear()
    try:
        names = [f.name for f in families()]
        assert names[-3:] == ['resnet_only', 'cnn', 'fixed_size']   # after every rank 0
        assert {'eva', 'swin', 'swin_v2', 'swin_v2_cr', 'vit', 'vit_hybrid'} <= set(names[:-3])
        assert family_of('resnet18').name == 'resnet_only' and family_of('convnext_atto').name == 'cnn'
    finally:
        harness.families._claim.cache_clear()


def test_the_probe_runs_on_the_meta_device_at_a_larger_non_square_size():
    found = probe(CNN)
    assert next(found.model.parameters()).device == torch.device('meta')
    assert found.native_size == (160, 160) and found.probe_size == (256, 320)
    assert found.native_features == (1, 96, 5, 5) and found.probe_features == (1, 96, 8, 10)


def test_cnn_expected_shapes_follow_feature_info():
    family = FAMILIES['cnn']
    model = probe(CNN).model
    geometry = family.expected_geometry(family.geometry(model), harness.families.Target((96, 160)))
    shapes = family.expected_shapes(geometry, 2)
    assert shapes['forward_features'] == (2, 96, 3, 5) and shapes['logits'] == (2, 1000)
    assert shapes['forward_intermediates'] == [(2, 32, 48, 80), (2, 32, 24, 40), (2, 48, 12, 20), (2, 192, 6, 10),
                                               (2, 96, 3, 5)]


def test_cnn_cases_check_shapes_drift_and_load_and_nothing_else(run_matrix):
    results = run_matrix(f'''
        name: cnn
        models: [{CNN}]
        origins: [timm]
        sizes: [160, [96, 224]]
        paths: [create, set_input_size, dynamic]
        ''')
    assert len(results) == 6
    for size in ('160x160', '96x224'):
        create = results[f'{CNN}-timm-{size}-create']
        assert create.status == 'passed', create.reason
        assert create.shape_errors == [] and create.drift_cosine is not None
        assert create.fidelity_weights_max_abs_diff is None and create.source_patch_size is None
        assert results[f'{CNN}-timm-{size}-set_input_size'].status == 'unsupported'
        assert 'dynamic_img_size' in results[f'{CNN}-timm-{size}-dynamic'].reason
    assert results[f'{CNN}-timm-160x160-create'].drift_cosine == pytest.approx(1.0)


def test_cnn_cases_of_nhwc_and_token_features_check_their_shapes(run_matrix, monkeypatch):
    """MambaOut's forward_features are NHWC, XCiT's tokens after a class token: each is judged in its layout, and
    a feature map one row short fails shapes in either."""
    models = ('{name: mambaout_femto, depths: [1, 1, 1, 1], dims: [8, 16, 24, 32]}, '
              '{name: xcit_nano_12_p16_224, depth: 1, embed_dim: 32, num_heads: 2, cls_attn_layers: 1}')
    text = f'name: layouts\nmodels: [{models}]\norigins: [timm]\nsizes: [[96, 128]]\npaths: [create]\n'
    results = run_matrix(text)
    assert {case_id: r.status for case_id, r in results.items()} == dict.fromkeys(results, 'passed')
    import timm.models.mambaout
    import timm.models.xcit
    for module, cls in ((timm.models.mambaout, 'MambaOut'), (timm.models.xcit, 'Xcit')):
        forward = getattr(module, cls).forward_features
        monkeypatch.setattr(getattr(module, cls), 'forward_features', lambda self, x, f=forward: f(self, x)[:, 1:])
        monkeypatch.delattr(getattr(module, cls), 'forward_intermediates')   # the checks' features come from it
    results = run_matrix(text.replace('name: layouts', 'name: layouts-short'))
    verdicts = {case_id: (r.status, r.failed_checks, r.reason) for case_id, r in results.items()}
    assert all(r.status == 'failed' and r.failed_checks == ['shapes'] for r in results.values()), verdicts


def test_cnn_shape_check_catches_a_feature_map_of_the_wrong_size(run_matrix, monkeypatch):
    """A model whose last stage loses a row at the target size (as a padding bug would) fails `shapes`."""
    import timm.models.resnet
    assert family_of(CNN).name == 'cnn'   # decided (and remembered) on the real model, before the bug goes in
    forward = timm.models.resnet.ResNet.forward_features
    monkeypatch.setattr(timm.models.resnet.ResNet, 'forward_features', lambda self, x: forward(self, x)[:, :, 1:])
    monkeypatch.delattr(timm.models.resnet.ResNet, 'forward_intermediates')
    result, = run_matrix(f'name: cnn\nmodels: [{CNN}]\norigins: [timm]\nsizes: [[96, 224]]\npaths: [create]\n'
                         ).values()
    assert result.status == 'failed'
    assert result.shape_errors == ['forward_features: got (4, 96, 2, 7), expected (4, 96, 3, 7)']


def test_cnn_sizes_must_be_multiples_of_the_last_stride(write_matrix, known_models):
    from harness.spec.matrix import MatrixError, load_matrix
    with pytest.raises(MatrixError, match='each side must be a multiple of 32'):
        load_matrix(write_matrix(f'name: cnn\nmodels: [{CNN}]\norigins: [timm]\nsizes: [[100, 160]]\n'), known_models)


def test_fixed_size_cases_are_unsupported_with_what_the_probe_saw(run_matrix):
    result, = run_matrix('name: fixed\nmodels: [mixer_s16_224]\norigins: [timm]\nsizes: [256]\npaths: [create]\n'
                         ).values()
    assert result.status == 'unsupported'
    assert 'MlpMixer takes only its own input size (224x224)' in result.reason and '320x384' in result.reason


def test_coverage_command_lists_families_categories_and_reasons():
    done = harness_cli('coverage', '--models', 'test_resnet', 'vit_tiny_patch16_224', 'mixer_s16_224',
                       'mvitv2_tiny', '--format', 'json')
    assert done.returncode == 0, done.stderr
    table = json.loads(done.stdout)
    rows = {row['architecture']: row for row in table['architectures']}
    assert table['summary'] == ('4 architectures: 1 oracle, 1 nothing_to_resample, 1 fixed_size, 1 unknown; '
                                '75.0% in a family; --zoo runs 3 (100.0% of those), 1 in miniature')
    assert [rows[name]['zoo'] for name in ('vit_tiny_patch16_224', 'test_resnet', 'mixer_s16_224', 'mvitv2_tiny')] \
        == ['miniature', 'real', 'real', 'no']
    assert 'the cnn family does not shrink' in rows['test_resnet']['zoo_reason']
    assert rows['vit_tiny_patch16_224']['checks'] == ('load reload resize dtype trainable shapes features finite noop '
                                                      'fidelity parity drift')
    assert rows['test_resnet']['module'] == 'resnet' and rows['test_resnet']['paths'] == 'create'
    assert rows['mixer_s16_224']['category'] == 'fixed_size' and 'own input size' in rows['mixer_s16_224']['reason']
    assert rows['mvitv2_tiny']['family'] is None   # pooled tokens, and relative positions resampled at run time
    assert 'forward_features gives (1, 120, 768) at 320x384' in rows['mvitv2_tiny']['reason']
    assert 'coverage: 4/4 architectures' in done.stderr


@pytest.fixture
def cli_main(monkeypatch):
    """`harness` in this process (the test above runs it as a user does), its one-line-warnings handler removed
    after the test."""
    monkeypatch.setattr(logging.getLogger('harness'), 'handlers', [])
    return main


def test_coverage_markdown_starts_with_the_summary_table(cli_main, capsys):
    code = cli_main(['coverage', '--models', 'resnet18*'])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and lines[0].startswith('**') and 'nothing_to_resample' in lines[0]
    assert lines[2].startswith('| category') and any(line.startswith('| architecture') for line in lines)


def test_coverage_of_a_pattern_matching_nothing_is_bad_input(cli_main, capsys):
    code = cli_main(['coverage', '--models', 'no_such_model*'])
    assert code == 2 and capsys.readouterr().err.startswith('error: --models: no_such_model* match no architecture')
