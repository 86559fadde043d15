"""A verdict is a promise: each status means what it says, and a failure names the path and check that are wrong."""
from __future__ import annotations

import math

import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock
from timm.models.vision_transformer import VisionTransformer

from harness import checks
from harness.checkpoints.synthesize import seeded_model
from tests.test_pipeline import resample_pos_embed_nearest, tiny

TINY_SWIN = '''
name: swin
models:
  - {name: swin_tiny_patch4_window7_224, embed_dim: 32, depths: [1, 1, 2, 1], num_heads: [1, 2, 2, 4],
     img_size: 128}
origins: [timm]
sizes: [%s]
window_sizes: [7]
paths: [%s]
'''


def by_path(results: dict) -> dict:
    return {r.path: r for r in results.values()}


def user_file_with(tmp_path, name: str, **changes: float):
    """A user's fine-tuned tiny ViT whose named tensors are filled with the given values."""
    model = seeded_model('vit_tiny_patch16_224', {'depth': 2, 'img_size': 32, 'num_classes': 10}, seed=1)
    state = model.state_dict()
    for key, value in changes.items():
        state[key.replace('__', '.')][0] = value
    torch.save(state, tmp_path / name)
    return f'''
name: user
models: [{{name: vit_tiny_patch16_224, depth: 2, img_size: 32, num_classes: 10}}]
origins: [{{file: {tmp_path / name}, num_classes: 10}}]
sizes: [48]
paths: [create, set_input_size]
'''


@pytest.mark.parametrize('value', [math.nan, math.inf])
def test_nan_and_inf_outputs_fail_finite(run_matrix, tmp_path, value):
    results = run_matrix(user_file_with(tmp_path, 'bad.pth', head__bias=value))
    for r in results.values():
        assert r.status == 'failed' and 'finite' in r.failed_checks, r.reason
        assert 'logits' in r.nonfinite_outputs and 'native-size logits' in r.nonfinite_outputs
        assert r.native_max_abs_diff == 0.0   # reload: the file's non-finite value came back as it is


def test_state_dict_diff_does_not_hide_nan():
    want = {'a': torch.zeros(3), 'b': torch.zeros(2)}
    diff = checks.state_dict_diff({'a': torch.tensor([0.0, math.nan, 0.0]), 'b': torch.ones(2)}, want)
    assert math.isnan(diff.max_abs_diff) and diff.worst == 'a'
    kept = {'a': torch.tensor([0.0, math.nan, math.inf]), 'b': torch.tensor([1.0, -math.inf])}
    assert checks.state_dict_diff(kept, {k: v.clone() for k, v in kept.items()}).max_abs_diff == 0.0
    assert checks.state_dict_diff(kept, {'a': torch.tensor([0.0, math.nan, 1.0])}).max_abs_diff == math.inf


def test_each_tensor_is_compared_in_its_own_unit():
    """A bias up to 16 off by 16 ulps is as close as a pos-embed up to 1 off by 16 ulps: both 16 * 2**-24."""
    bias, pos = torch.tensor([12.0, -3.0]), torch.tensor([0.75, 0.1])
    ulp16, ulp1 = 2.0 ** -20, 2.0 ** -24   # float32 spacing in [8, 16) and in [0.5, 1)
    diff = checks.state_dict_diff({'bias': bias + torch.tensor([16 * ulp16, 0.0]), 'pos': pos},
                                  {'bias': bias, 'pos': pos})
    assert diff.max_abs_diff == 16 * ulp16 / 16 == 16 * ulp1 and diff.worst == 'bias'
    assert checks.own_unit(torch.tensor([0.3, -1.0])) == 1.0 == checks.own_unit(torch.zeros(2))
    assert checks.own_unit(torch.tensor([math.inf, -100.0, 3.0])) == 128.0   # a mask's -100: infinities aside


def test_a_timm_exception_in_set_input_size_fails_resize(run_matrix, monkeypatch):
    def broken(self, img_size=None, patch_size=None):
        raise AttributeError("'PatchEmbed' object has no attribute 'dynamic_img_pad'")

    monkeypatch.setattr(VisionTransformer, 'set_input_size', broken)
    results = by_path(run_matrix(tiny()))
    # the no-op call to the own size raises the same way
    assert results['set_input_size'].status == 'failed'
    assert results['set_input_size'].failed_checks == ['resize', 'noop']
    assert 'AttributeError' in results['set_input_size'].reason
    assert results['create'].status == results['dynamic'].status == 'passed'


def test_a_set_input_size_that_ignores_the_patch_fails_not_errors(run_matrix, monkeypatch):
    """The model keeps its old patch and pos-embed: timm's own `_pos_embed` raises on the expected grid. That is
    timm's fault (shapes and fidelity), not the harness's (error)."""
    original = VisionTransformer.set_input_size

    def patch_ignored(self, img_size=None, patch_size=None, **kwargs):
        original(self, img_size=img_size, **kwargs)

    monkeypatch.setattr(VisionTransformer, 'set_input_size', patch_ignored)
    r = by_path(run_matrix(tiny(paths='set_input_size', patch=8)))['set_input_size']
    assert r.status == 'failed' and 'fidelity' in r.failed_checks and 'shapes' in r.failed_checks, r.reason
    assert r.fidelity_weights_max_abs_diff == math.inf
    assert r.fidelity_worst_tensor == 'patch_embed.proj.weight'   # the stored tensor named first, as for equals


def test_a_create_path_that_cannot_run_leaves_the_other_paths_judged(run_matrix, monkeypatch):
    """Only the model loaded at the target size raises; dynamic still passes, its parity recorded as not judged."""
    original = VisionTransformer.forward_head

    def loaded_at_target_raises(self, x, pre_logits=False):
        if self.pretrained_cfg.get('file') and tuple(self.patch_embed.img_size) == (64, 96):
            raise RuntimeError('mat1 and mat2 shapes cannot be multiplied')
        return original(self, x, pre_logits=pre_logits)

    monkeypatch.setattr(VisionTransformer, 'forward_head', loaded_at_target_raises)
    results = by_path(run_matrix(tiny(paths='create, dynamic')))
    assert results['create'].status == 'failed' and results['create'].failed_checks == ['shapes']
    assert 'forward_head' in results['create'].reason
    assert results['dynamic'].status == 'passed', results['dynamic'].reason
    assert 'create path did not build or run' in results['dynamic'].parity_note


def test_out_of_memory_is_a_resource_limit_not_a_failure(run_matrix, monkeypatch):
    def out_of_memory(self, x, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 4398046511104 bytes")

    monkeypatch.setattr(VisionTransformer, 'forward_intermediates', out_of_memory)
    for r in run_matrix(tiny(paths='create, dynamic')).values():
        assert r.status == 'resource' and r.reason.startswith('out of memory: RuntimeError')


def test_expect_entries_cover_only_the_checks_they_name(run_matrix, monkeypatch):
    resample_pos_embed_nearest(monkeypatch)
    known = 'expect: [{match: {path: create}, checks: [fidelity], reason: nearest resample}]\n'
    (covered,) = run_matrix(tiny(paths='create') + known).values()
    assert covered.status == 'xfailed' and covered.failed_checks == ['fidelity']
    other = 'expect: [{match: {path: create}, checks: [parity], reason: a small parity difference}]\n'
    (hidden,) = run_matrix(tiny(paths='create') + other).values()
    assert hidden.status == 'failed' and 'covers only parity, not fidelity' in hidden.reason


def test_parity_is_not_judged_against_a_create_path_that_fails_fidelity(run_matrix, monkeypatch):
    """The wrong path is blamed: create resamples wrongly at load, set_input_size and dynamic are right."""
    import timm.models.vision_transformer as vit_module
    original = vit_module.resample_abs_pos_embed
    in_load = {'active': False}
    original_filter = vit_module.checkpoint_filter_fn

    def filter_with_nearest(state_dict, model, *args, **kwargs):
        in_load['active'] = True
        try:
            return original_filter(state_dict, model, *args, **kwargs)
        finally:
            in_load['active'] = False

    def nearest_at_load(posemb, new_size, old_size=None, num_prefix_tokens=1, **kwargs):
        if in_load['active']:
            kwargs.update(interpolation='nearest', antialias=False)
        return original(posemb, new_size=new_size, old_size=old_size, num_prefix_tokens=num_prefix_tokens, **kwargs)

    monkeypatch.setattr(vit_module, 'checkpoint_filter_fn', filter_with_nearest)
    monkeypatch.setattr(vit_module, 'resample_abs_pos_embed', nearest_at_load)
    results = by_path(run_matrix(tiny()))
    assert results['create'].status == 'failed' and results['create'].failed_checks == ['fidelity']
    for path in ('set_input_size', 'dynamic'):
        r = results[path]
        assert r.status == 'passed', r.reason
        assert r.parity_max_abs_diff > 1e-3 and 'create path fails fidelity' in r.parity_note


def test_a_stale_attention_mask_fails_fidelity_at_the_target_and_noop_at_the_own_size(run_matrix, monkeypatch):
    """set_input_size that resamples every weight right but leaves the shifted windows unmasked: fidelity sees it at
    the target (the mask in use is a forward tensor, compared on every path), the no-op call at the model's own
    size. Parity, which was the only check to see it at the target before, still records it, not judged (the path
    fails fidelity)."""
    original = SwinTransformerBlock.set_input_size

    def unmasked(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.attn_mask is not None:
            self.attn_mask = torch.zeros_like(self.attn_mask)

    monkeypatch.setattr(SwinTransformerBlock, 'set_input_size', unmasked)
    results = by_path(run_matrix(TINY_SWIN % ('[128, 192]', 'create, set_input_size')))
    assert results['create'].status == 'passed'
    r = results['set_input_size']
    assert r.status == 'failed' and r.failed_checks == ['noop', 'fidelity'], r.reason
    # the mask's -100 lost, in the mask's own unit (128)
    assert r.fidelity_worst_tensor.endswith('.attn_mask in use') and r.fidelity_weights_max_abs_diff == 100 / 128
    assert r.parity_note == 'not judged: the set_input_size path fails fidelity' and r.parity_max_abs_diff > 1e-4
    assert r.noop_max_abs_diff > 1e-4


def test_dynamic_swin_is_judged_against_what_it_is_documented_to_compute(run_matrix):
    """dynamic keeps the source's windows and shifts: its fidelity oracle does too, and parity with create
    (which re-chooses them for the target) is recorded as a documented difference."""
    results = by_path(run_matrix(TINY_SWIN % ('[128, 192]', 'create, dynamic')))
    dynamic = results['dynamic']
    assert dynamic.status == 'passed', dynamic.reason
    assert dynamic.fidelity_outputs_max_abs_diff < 1e-4
    assert dynamic.parity_note.startswith('documented difference: dynamic computes with windows')
    assert dynamic.parity_max_abs_diff > 1e-3   # the two paths really compute different models here


def test_dynamic_swin_fidelity_catches_dropped_masks(run_matrix, monkeypatch):
    original = SwinTransformerBlock.get_attn_mask

    def no_dynamic_mask(self, x=None, device=None, dtype=None):
        return None if x is not None else original(self, x, device, dtype)

    monkeypatch.setattr(SwinTransformerBlock, 'get_attn_mask', no_dynamic_mask)
    (dynamic,) = run_matrix(TINY_SWIN % ('[128, 192]', 'dynamic')).values()
    assert dynamic.status == 'failed' and dynamic.failed_checks == ['fidelity']
    assert dynamic.fidelity_worst_tensor.endswith('attn_mask in use')   # the mask the block used, compared


def test_npz_loader_interpolation_is_a_documented_parity_difference(run_matrix):
    results = by_path(run_matrix('''
name: npz
models: [{name: vit_tiny_patch16_224, depth: 2, img_size: 32}]
origins: [big_vision]
sizes: [48]
'''))
    assert {r.status for r in results.values()} == {'passed'}
    for path in ('set_input_size', 'dynamic'):
        assert 'big_vision loader resamples bilinear without antialiasing' in results[path].parity_note
        assert results[path].parity_max_abs_diff > 0


@pytest.mark.parametrize('noop, status', [(0.0, 'unsupported'), (0.5, 'xfailed'), (None, 'unsupported')])
def test_an_expect_entry_is_never_xpassed_by_a_path_that_could_not_run(noop, status):
    """An old release that cannot build the path: with nothing failed it is unsupported (what the entry names
    may never have run), with the entry's check failed it is xfailed, and the reason says both."""
    from harness.case.verdict import judge
    from harness.spec.matrix import Expectation, Tolerances
    from harness.store.case_result import CaseResult
    result = CaseResult('c', 'm', 'vit', 'timm', [64, 64], None, None, 'set_input_size', native_max_abs_diff=0.0,
                        noop_max_abs_diff=noop)
    judge(result, Tolerances().for_path('set_input_size'),
          Expectation((('path', 'set_input_size'),), 'windows re-chosen', ('noop',)),
          unsupported='SwinTransformer.set_input_size has no window_size argument')
    assert result.status == status
    assert 'SwinTransformer.set_input_size has no window_size argument' in result.reason
    if status == 'unsupported':
        assert result.reason.endswith('reload, finite (native size)' + (', noop' if noop is not None else ''))
    else:
        assert result.reason.startswith('windows re-chosen [noop:') and 'path itself is unsupported' in result.reason
