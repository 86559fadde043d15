"""Each check passes on timm's correct behaviour and fails on a deliberately broken one."""
from __future__ import annotations

import pytest
import timm.models.vision_transformer as vit_module
import torch
from timm.models.vision_transformer import VisionTransformer

TINY_VIT = '''
name: tiny
models:
  - {name: vit_tiny_patch16_224, depth: 2, img_size: [32, 64]}
origins: [timm]
sizes: [[64, 96]]
patch_sizes: [%s]
paths: [%s]
'''


def tiny(paths='create, set_input_size, dynamic', patch=16, extra=''):
    return TINY_VIT % (patch, paths) + extra


def test_correct_resizes_pass_every_check(run_matrix):
    results = run_matrix(tiny(), timing=True)
    assert {r.path: r.status for r in results.values()} == {
        'create': 'passed', 'set_input_size': 'passed', 'dynamic': 'passed'}
    for r in results.values():
        assert r.load_error is None and r.missing_keys == [] and r.shape_errors == []
        assert r.native_max_abs_diff == 0.0
        assert r.source_img_size == [32, 64] and r.source_patch_size == 16
        assert r.drift_cosine is not None and 0 < r.drift_top1_agreement <= 1
        assert r.time_median_ms > 0 and r.timing_repeats == 2 and r.images_per_s > 0
        assert len(r.time_samples_ms) == 2 and r.timing_budget_s == 0.0
    by_path = {r.path: r for r in results.values()}
    assert by_path['create'].fidelity_weights_max_abs_diff < 1e-5
    assert by_path['set_input_size'].parity_max_abs_diff < 1e-4
    assert by_path['set_input_size'].noop_max_abs_diff == 0.0 and by_path['set_input_size'].noop_changes == []
    assert by_path['create'].noop_max_abs_diff is None   # the invariant belongs to set_input_size cases
    assert by_path['dynamic'].fidelity_outputs_max_abs_diff < 1e-4   # nothing stored: outputs compared


FEATURE_INFO_AFTER_PATCH_CHANGE = '''
expect:
  - {match: {path: set_input_size, patch_size: 8}, checks: [features], reason: ViT feature_info keeps patch 16}
'''


def test_patch_size_change_resamples_kernel(run_matrix):
    """(timm 1.0.31 still leaves feature_info at the creation patch after set_input_size(patch_size=8).)"""
    results = run_matrix(tiny(paths='create, set_input_size', patch=8, extra=FEATURE_INFO_AFTER_PATCH_CHANGE))
    assert {r.path: (r.status, r.failed_checks) for r in results.values()} == {
        'create': ('passed', []), 'set_input_size': ('xfailed', ['features'])}
    assert all(r.fidelity_weights_max_abs_diff < 1e-5 for r in results.values())


def resample_pos_embed_nearest(monkeypatch) -> None:
    """Make timm resample ViT position embeddings nearest-neighbour: right shape, wrong values."""
    original = vit_module.resample_abs_pos_embed

    def nearest(posemb, new_size, old_size=None, num_prefix_tokens=1, **kwargs):
        return original(posemb, new_size=new_size, old_size=old_size, num_prefix_tokens=num_prefix_tokens,
                        interpolation='nearest', antialias=False)

    monkeypatch.setattr(vit_module, 'resample_abs_pos_embed', nearest)


def test_fidelity_catches_wrong_values_that_both_paths_agree_on(run_matrix, monkeypatch):
    """A nearest-neighbour pos-embed resample has the right shape and both paths share it: only fidelity sees it."""
    resample_pos_embed_nearest(monkeypatch)
    results = run_matrix(tiny(paths='create, set_input_size'))
    for r in results.values():
        assert r.status == 'failed', r
        assert 'fidelity' in r.failed_checks and 'parity' not in r.failed_checks
        assert r.fidelity_worst_tensor == 'pos_embed' and r.fidelity_weights_max_abs_diff > 1e-2


def test_a_path_that_resamples_wrongly_is_blamed_by_fidelity_not_parity(run_matrix, monkeypatch):
    """set_input_size that reads the new grid transposed: same shape, different model than create's."""
    original = VisionTransformer.set_input_size

    def transposed(self, img_size=None, patch_size=None):
        original(self, img_size=img_size, patch_size=patch_size)
        h, w = self.patch_embed.grid_size
        prefix, grid = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        swapped = grid.reshape(1, h, w, -1).transpose(1, 2).reshape(1, h * w, -1)
        self.pos_embed = torch.nn.Parameter(torch.cat([prefix, swapped], dim=1))

    monkeypatch.setattr(VisionTransformer, 'set_input_size', transposed)
    results = run_matrix(tiny(paths='create, set_input_size'))
    by_path = {r.path: r for r in results.values()}
    assert by_path['create'].status == 'passed'
    assert by_path['set_input_size'].status == 'failed'
    # the transposition shows at the source's own 2x4 grid too: set_input_size to the own size is no no-op
    assert by_path['set_input_size'].failed_checks == ['noop', 'fidelity']
    assert by_path['set_input_size'].parity_max_abs_diff > 1e-3   # recorded, not judged: its own resample is wrong
    assert by_path['set_input_size'].parity_note == 'not judged: the set_input_size path fails fidelity'


def test_shapes_catch_a_wrong_token_count(run_matrix, monkeypatch):
    original = VisionTransformer.forward_intermediates

    def one_token_short(self, x, **kwargs):
        final, per_block = original(self, x, **kwargs)
        return final[:, :-1], per_block

    monkeypatch.setattr(VisionTransformer, 'forward_intermediates', one_token_short)
    (result,) = run_matrix(tiny(paths='create')).values()
    assert result.status == 'failed' and result.failed_checks == ['shapes']
    assert 'forward_features: got (4, 24, 192), expected (4, 25, 192)' in result.shape_errors[0]


def test_missing_api_is_unsupported_not_failed(run_matrix, monkeypatch):
    monkeypatch.delattr(VisionTransformer, 'set_input_size')
    results = run_matrix(tiny(paths='set_input_size', patch=8) + '')
    (result,) = results.values()
    assert result.status == 'unsupported'
    assert 'set_input_size' in result.reason
    # what the release can run still ran: the checkpoint's invariants; noop needs set_input_size, so it did not
    assert result.reason.endswith('ran and held: load (native size), reload, finite (native size)')
    assert result.native_max_abs_diff == 0.0 and result.noop_max_abs_diff is None


def _set_input_size_without_patch_size(monkeypatch, then=lambda model: None):
    """An older release's set_input_size: no patch_size argument; ``then`` is what it does after resizing."""
    original = VisionTransformer.set_input_size

    def older(self, img_size=None):
        original(self, img_size=img_size)
        then(self)
    monkeypatch.setattr(VisionTransformer, 'set_input_size', older)


def test_a_path_the_release_cannot_build_still_runs_noop_and_reload(run_matrix, monkeypatch):
    """The release lacks the argument the case needs (patch_size), not the method: noop runs on it and holds."""
    _set_input_size_without_patch_size(monkeypatch)
    (result,) = run_matrix(tiny(paths='set_input_size', patch=8)).values()
    assert result.status == 'unsupported' and result.failed_checks == []
    assert result.reason == ('VisionTransformer.set_input_size has no patch_size argument; '
                             'ran and held: load (native size), reload, finite (native size), noop')
    assert result.noop_max_abs_diff == 0.0 and result.native_max_abs_diff == 0.0


def test_an_invariant_that_fails_on_an_unsupported_path_fails_the_case(run_matrix, monkeypatch):
    """Where old releases change a model silently: its set_input_size cannot take the case's patch size, and
    called with the model's own size it moves the position embedding. The case fails noop, not unsupported."""
    def moves_pos_embed(model):
        model.pos_embed.data.mul_(1.001)
    _set_input_size_without_patch_size(monkeypatch, moves_pos_embed)
    (result,) = run_matrix(tiny(paths='set_input_size', patch=8)).values()
    assert result.status == 'failed' and result.failed_checks == ['noop']
    assert result.reason.endswith('(the set_input_size path itself is unsupported: VisionTransformer.set_input_size '
                                  'has no patch_size argument)')


def test_dynamic_cannot_change_patch_size(run_matrix):
    (result,) = run_matrix(tiny(paths='dynamic', patch=8)).values()
    assert result.status == 'unsupported' and 'patch' in result.reason


def test_expected_failures_are_xfailed_and_unexpected_passes_xpassed(run_matrix, monkeypatch):
    expect = '''
expect:
  - {match: {path: create}, checks: [shapes], reason: known bug}
  - {match: {path: set_input_size}, checks: [parity], reason: fixed long ago}
'''
    monkeypatch.setattr(VisionTransformer, 'forward_intermediates', lambda self, x: (torch.zeros(1), []))
    broken = run_matrix(tiny(paths='create') + expect)
    assert [r.status for r in broken.values()] == ['xfailed']
    monkeypatch.undo()
    fine = run_matrix(tiny(paths='set_input_size') + expect)
    (result,) = fine.values()
    assert result.status == 'xpassed' and 'fixed long ago' in result.reason


def test_drift_is_judged_only_when_the_matrix_sets_a_limit(run_matrix):
    (lenient,) = run_matrix(tiny(paths='create')).values()
    (strict,) = run_matrix(tiny(paths='create') + 'tolerances: {drift_min_cosine: 1.01}\n').values()
    assert lenient.status == 'passed'
    assert strict.status == 'failed' and strict.failed_checks == ['drift']
    assert strict.drift_cosine == lenient.drift_cosine


def test_user_checkpoint_file_loads_through_timm(run_matrix, tmp_path):
    """`file:` origin: a user's own checkpoint, here a fine-tuned-looking ViT with 10 classes."""
    from harness.checkpoints.synthesize import seeded_model
    model = seeded_model('vit_tiny_patch16_224', {'depth': 2, 'img_size': 32, 'num_classes': 10}, seed=3)
    torch.save({'state_dict': model.state_dict()}, tmp_path / 'finetuned.pth')
    results = run_matrix(f'''
name: user-file
models: [{{name: vit_tiny_patch16_224, depth: 2, img_size: 32, num_classes: 10}}]
origins: [{{file: {tmp_path / 'finetuned.pth'}, num_classes: 10}}]
sizes: [48]
''')
    assert {r.status for r in results.values()} == {'passed'}
    assert all(r.origin == 'file=finetuned' for r in results.values())


def test_a_checkpoint_that_loads_but_does_not_fit_fails_load_and_names_the_file(run_matrix, tmp_path):
    """A readable checkpoint of another model: the load fails, with the missing keys taken from torch."""
    from harness.checkpoints.synthesize import seeded_model
    other = seeded_model('vit_tiny_patch16_224', {'depth': 1, 'img_size': 32}, seed=0).state_dict()
    del other['norm.weight']
    torch.save(other, tmp_path / 'other.pth')
    results = run_matrix(f'''
name: wrong-model
models: [{{name: vit_tiny_patch16_224, depth: 2, img_size: 32}}]
origins: [{{file: {tmp_path / 'other.pth'}}}]
sizes: [48]
paths: [create]
''')
    (result,) = results.values()
    assert result.status == 'failed' and result.failed_checks == ['load']
    assert str(tmp_path / 'other.pth') in result.load_error
    assert 'norm.weight' in result.missing_keys and any(k.startswith('blocks.1.') for k in result.missing_keys)


@pytest.mark.parametrize('window', [4, 8])
def test_swin_window_change_resamples_relative_position_tables(run_matrix, window):
    results = run_matrix(f'''
name: swin
models:
  - {{name: swin_tiny_patch4_window7_224, embed_dim: 32, depths: [1, 1, 2, 1], num_heads: [1, 2, 2, 4],
     img_size: 128}}
origins: [timm, microsoft]
sizes: [[128, 192]]
window_sizes: [{window}]
paths: [create, set_input_size]
''')
    for r in results.values():
        assert r.status == 'passed', r.reason
        assert r.fidelity_weights_max_abs_diff < 1e-4 and r.source_window_size == 7


# --- invariants every family gets ----------------------------------------------------------------------------

SMALL_SWIN = """
name: swin
models:
  - {name: swin_tiny_patch4_window7_224, embed_dim: 32, depths: [1, 1, 2, 1], num_heads: [1, 2, 2, 4],
     img_size: 128, window_size: 4}
origins: [timm]
sizes: [[128, 192]]
paths: [set_input_size]
"""


def test_noop_catches_a_window_changed_by_a_set_input_size_asked_only_for_the_own_size(run_matrix, monkeypatch):
    """timm's set_input_size choosing a window nobody asked for: the case's own path spells its window out and
    passes; the no-op call, made as users make it, shows the change."""
    from timm.models.swin_transformer import SwinTransformer
    original = SwinTransformer.set_input_size

    def rewindowing(self, img_size=None, patch_size=None, window_size=None, **kwargs):
        return original(self, img_size=img_size, patch_size=patch_size, window_size=window_size or 8, **kwargs)
    monkeypatch.setattr(SwinTransformer, 'set_input_size', rewindowing)
    (result,) = run_matrix(SMALL_SWIN).values()
    assert result.status == 'failed' and result.failed_checks == ['noop'], result.reason
    assert 'window_sizes: stored ((8, 8), (8, 8), (8, 8), (4, 4)), expected ((4, 4), (4, 4), (4, 4), (4, 4))' \
        in result.reason


def test_noop_passes_for_the_real_swin_set_input_size(run_matrix):
    (result,) = run_matrix(SMALL_SWIN).values()
    assert result.status == 'passed' and result.noop_changes == [] and result.noop_max_abs_diff == 0.0


def test_noop_catches_outputs_moved_by_a_set_input_size_to_the_own_size(run_matrix, monkeypatch):
    original = VisionTransformer.set_input_size

    def nudging(self, img_size=None, patch_size=None):
        original(self, img_size=img_size, patch_size=patch_size)
        with torch.no_grad():
            self.pos_embed.mul_(1.5)   # (a constant added to every channel would vanish in LayerNorm)
    monkeypatch.setattr(VisionTransformer, 'set_input_size', nudging)
    (result,) = run_matrix(tiny(paths='set_input_size')).values()
    assert 'noop' in result.failed_checks and result.noop_max_abs_diff > 1e-4
    assert "set_input_size to the model's own size changed it: outputs moved by" in result.reason


def test_reload_catches_a_checkpoint_that_does_not_come_back_as_saved(run_matrix, monkeypatch):
    from harness.checkpoints.store import Checkpoint
    original = Checkpoint.reference_state_dict

    def off_by_a_bit(self):
        state = original(self)
        state['norm.weight'] = state['norm.weight'] + 0.01
        return state
    monkeypatch.setattr(Checkpoint, 'reference_state_dict', off_by_a_bit)
    (result,) = run_matrix(tiny(paths='create')).values()
    assert result.status == 'failed' and result.failed_checks == ['reload', 'fidelity']   # fidelity: same source
    assert result.native_worst_tensor == 'norm.weight' and 'configuration they were saved from' in result.reason
