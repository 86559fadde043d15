"""Model states (a matrix's ``states:`` axis) and the checks of what else a resize changes: ``dtype``,
``trainable`` and ``features``. Each check is proven by a mutant of timm's code it kills, and passes on the
current release."""
from __future__ import annotations

import copy
import functools

import pytest
import timm.models.swin_transformer as swin_module
import torch
from timm.layers import RmsNorm
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from harness import checks, states
from harness.analysis.compare import CompareSpec, status_change
from harness.spec.cases import expand
from harness.spec.matrix import MatrixError, Tolerances, load_matrix
from tests.conftest import REPO

TINY_VIT = '''
name: vit
models: [{name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 32}]
origins: [timm]
sizes: [48]
states: [%s]
paths: [set_input_size]
'''
TINY_SWIN = '''
name: swin
models: [{name: swin_tiny_patch4_window7_224, embed_dim: 16, depths: [1, 1], num_heads: [1, 2], img_size: 32,
          window_size: 4}]
origins: [timm]
sizes: [32]
%s
states: [%s]
paths: [set_input_size]
'''


def only(results: dict):
    (result,) = results.values()
    return result


# --- dtype -----------------------------------------------------------------------------------------------------

def test_a_bf16_swin_keeps_its_dtype_through_a_window_change(run_matrix):
    result = only(run_matrix(TINY_SWIN % ('window_sizes: [2]', 'bf16')))
    assert result.status == 'passed', result.reason
    assert result.case_id == 'swin_tiny_patch4_window7_224-timm-32x32-window2-bf16-set_input_size'
    assert result.state == 'bf16' and result.dtype_changes == []


def test_dtype_catches_a_table_resize_that_returns_float32(run_matrix, monkeypatch):
    """The Swin bug of timm 1.0.8-1.0.30: the resized position-bias table comes back in float32."""
    original = swin_module.resize_rel_pos_bias_table
    monkeypatch.setattr(swin_module, 'resize_rel_pos_bias_table', lambda *a, **k: original(*a, **k).float())
    result = only(run_matrix(TINY_SWIN % ('window_sizes: [2]', 'bf16')))
    assert result.status == 'failed' and 'dtype' in result.failed_checks, result.reason
    assert 'layers.0.blocks.0.attn.relative_position_bias_table is float32, was bfloat16' in result.dtype_changes


def test_dtype_names_a_tensor_left_on_another_device():
    model = nn.Linear(2, 2)
    before = states.snapshot(model, 'fp32')
    model.register_buffer('table', torch.zeros(2, device='meta'))
    assert states.dtype_changes(before, model) == ['table is on meta, was on cpu']
    model.table = torch.zeros(2, dtype=torch.float64)
    assert states.dtype_changes(before, model) == ['table is float64, was float32']


# --- trainable -------------------------------------------------------------------------------------------------

def rebuilt_pos_embed(model: VisionTransformer) -> None:
    """A resize that wraps the resampled table in a fresh nn.Parameter: requires_grad=True again."""
    model.pos_embed = nn.Parameter(model.pos_embed.detach())


def back_to_training(model: VisionTransformer) -> None:
    """A resize that probes in eval mode and then calls train(): a frozen backbone's norm layers train again."""
    model.train()


@pytest.mark.parametrize('mutant, finding', [
    (rebuilt_pos_embed, 'pos_embed.requires_grad is True, was False'),
    (back_to_training, 'norm (LayerNorm).training is True, was False'),
])
def test_trainable_catches_a_resize_that_unfreezes(run_matrix, monkeypatch, mutant, finding):
    original = VisionTransformer.set_input_size

    @functools.wraps(original)   # the harness reads the signature for the arguments a release takes
    def set_input_size(self, *args, **kwargs):
        original(self, *args, **kwargs)
        mutant(self)

    monkeypatch.setattr(VisionTransformer, 'set_input_size', set_input_size)
    result = only(run_matrix(TINY_VIT % 'frozen'))
    assert result.status == 'failed' and 'trainable' in result.failed_checks, result.reason
    assert finding in result.trainable_changes


def test_a_frozen_and_a_training_vit_keep_their_flags(run_matrix):
    results = run_matrix(TINY_VIT % 'frozen, train')
    assert {r.case_id: r.status for r in results.values()} == {
        'vit_tiny_patch16_224-timm-48x48-frozen-set_input_size': 'passed',
        'vit_tiny_patch16_224-timm-48x48-train-set_input_size': 'passed'}
    assert all(r.trainable_changes == [] and r.dtype_changes == [] for r in results.values())


def test_frozen_freezes_parameters_and_norms_and_trains_the_rest():
    model = states.apply_state(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2), nn.BatchNorm1d(2), RmsNorm(2),
                                             nn.Dropout()), 'frozen')
    assert not any(p.requires_grad for p in model.parameters())
    assert [m.training for m in model] == [True, False, False, False, True] and model.training


class Dropping(nn.Module):
    """A model whose features drop 90% of their values in training mode."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.9)

    def forward_features(self, x):
        return self.drop(x)

    def forward_head(self, x, pre_logits=False):
        return x


def test_forward_outputs_runs_in_eval_mode_and_puts_the_flags_back():
    """A training-mode pass drops paths at random: the checks' outputs must not depend on it."""
    model = states.apply_state(Dropping(), 'train')
    outputs = checks.forward_outputs(model, torch.ones(2, 4))
    assert torch.equal(outputs.logits, torch.ones(2, 4))
    assert model.training and model.drop.training


# --- features --------------------------------------------------------------------------------------------------

def test_features_catches_a_resize_that_forgets_feature_info(run_matrix, monkeypatch):
    """The Swin bug of timm <= 1.0.30: after a patch change feature_info keeps the old strides."""
    original = SwinTransformer.set_input_size

    @functools.wraps(original)
    def set_input_size(self, *args, **kwargs):
        kept = copy.deepcopy(self.feature_info)
        original(self, *args, **kwargs)
        self.feature_info = kept

    monkeypatch.setattr(SwinTransformer, 'set_input_size', set_input_size)
    result = only(run_matrix(TINY_SWIN % ('patch_sizes: [2]', 'fp32')))
    assert result.status == 'failed' and result.failed_checks == ['features'], result.reason
    assert result.feature_errors[0] == ('level 0: feature_info says 16 channels at reduction 4 (8x8 at 32x32), '
                                        'forward_intermediates gave 16 channels at 16x16')


def test_a_swin_patch_change_updates_feature_info(run_matrix):
    result = only(run_matrix(TINY_SWIN % ('patch_sizes: [2]', 'fp32')))
    assert result.status == 'passed' and result.feature_errors == [], result.reason


def test_features_counts_levels_and_leaves_token_sequences_alone():
    model = nn.Module()
    model.feature_info = [{'num_chs': 8, 'reduction': 4}, {'num_chs': 16, 'reduction': 8}]
    assert checks.feature_errors(model, (36, 30), [(1, 8, 9, 8), (1, 16, 5, 4)]) == []   # sides rounded up
    assert checks.feature_errors(model, (32, 32), [(1, 8, 8, 8)]) == [
        'feature_info lists 2 levels, forward_intermediates returned 1']
    assert checks.feature_errors(model, (32, 32), [(1, 64, 8), (1, 16, 5, 4)])[0].startswith('level 1: ')
    assert checks.feature_errors(model, (32, 32), None) == []


# --- the axis --------------------------------------------------------------------------------------------------

def test_states_are_an_axis_a_model_entry_may_set_and_expect_entries_match(write_matrix, known_models):
    matrix = load_matrix(write_matrix('''
        name: s
        models:
          - {name: vit_tiny_patch16_224, depth: 1, img_size: 32}
          - {name: vit_small_patch16_224, depth: 1, img_size: 32, states: [fp32, frozen]}
        origins: [timm]
        sizes: [48]
        paths: [create]
        expect:
          - {match: {state: frozen}, checks: [trainable], reason: r}
        '''), known_models)
    ids = [c.case_id for c in expand(matrix)]
    assert ids == ['vit_tiny_patch16_224-timm-48x48-create', 'vit_small_patch16_224-timm-48x48-create',
                   'vit_small_patch16_224-timm-48x48-frozen-create']
    assert [c.state for c in expand(matrix) if matrix.expect[0].matches(c.fields(), '1.0.31')] == ['frozen']


@pytest.mark.parametrize('value, problem', [
    ('[fp64]', "states[0]: unknown state 'fp64'; expected one of ['fp32', 'bf16', 'fp16', 'frozen', 'train']"),
    ('[bf16, bf16]', "states[1]: 'bf16' is listed twice"),
    ('[]', 'states: expected a list of model states'),
    ('bf16', "states: expected a list of model states from ['fp32', 'bf16', 'fp16', 'frozen', 'train'] "
             "(default [fp32]), got 'bf16'"),
])
def test_bad_states_are_matrix_errors(write_matrix, known_models, value, problem):
    with pytest.raises(MatrixError) as raised:
        load_matrix(write_matrix(f'name: s\nmodels: [vit_tiny_patch16_224]\norigins: [timm]\nsizes: [224]\n'
                                 f'states: {value}\n'), known_models)
    assert len(raised.value.problems) == 1 and raised.value.problems[0].startswith(problem), raised.value.problems


def test_half_precision_limits_are_ten_roundings_of_the_dtype():
    tol = Tolerances().for_path('set_input_size')
    bf16, fp16 = states.scaled_tolerances(tol, 'bf16'), states.scaled_tolerances(tol, 'fp16')
    assert bf16.parity_atol == bf16.fidelity_weights_atol == 10 * 2 ** -8 and fp16.noop_atol == 10 * 2 ** -11
    assert bf16.parity_min_cosine == 1 - 10 * 2 ** -8
    assert bf16.reload_atol == tol.reload_atol   # the fp32 load: not scaled
    assert states.scaled_tolerances(tol, 'frozen') == tol


def test_a_state_the_device_cannot_compute_is_unsupported(monkeypatch):
    states.device_problem.cache_clear()
    monkeypatch.setattr(states.F, 'layer_norm', lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError('"LayerNormKernelImpl" not implemented for \'Half\'')))
    try:
        assert states.device_problem('fp16', 'cpu') == ('torch has no fp16 layer_norm on cpu (RuntimeError: '
                                                        '"LayerNormKernelImpl" not implemented for \'Half\')')
        assert states.device_problem('frozen', 'cpu') is None
    finally:
        states.device_problem.cache_clear()


def test_compare_shows_a_finding_that_changed():
    base = {'status': 'failed', 'dtype_changes': ['t is float32, was bfloat16'], 'device': 'cpu'}
    change, detail = status_change(base, {'status': 'failed', 'device': 'cpu'}, CompareSpec())
    assert change == 'outputs_changed' and detail == "dtype_changes ['t is float32, was bfloat16'] -> []"


# --- the shipped states matrix on a release with the bugs ----------------------------------------------------

@pytest.mark.slow
def test_the_states_matrix_flags_timm_1_0_30(tmp_path, release_cache):
    """matrices/states.yaml's set_input_size cases on timm 1.0.30: the bf16 hybrid crashes, Swin's resized table
    comes back float32, frozen tensors train again, Swin's feature_info keeps the old strides."""
    from tests.test_cli import harness, records
    done = harness('run', REPO / 'matrices' / 'states.yaml', '--timm', '1.0.30', '--no-timing', '-q',
                   '-k', 'set_input_size', '--out', tmp_path, '--cache', release_cache)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    failed = {r['case_id']: r['failed_checks'] for r in records(tmp_path) if r['status'] == 'failed'}
    assert failed['vit_tiny_r_s16_p8_224-timm-96x96-bf16-set_input_size'] == ['resize']
    assert 'dtype' in failed['swin_tiny_patch4_window7_224-timm-96x96-patch4-window2-bf16-set_input_size']
    assert failed['vit_tiny_patch16_224-timm-96x96-patch16-frozen-set_input_size'] == ['trainable']
    assert 'trainable' in failed['vit_tiny_r_s16_p8_224-timm-96x96-frozen-set_input_size']
    assert 'features' in failed['swin_tiny_patch4_window7_224-timm-96x96-patch2-window4-frozen-set_input_size']
