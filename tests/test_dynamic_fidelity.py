"""The dynamic path is judged on the tensors its forward pass computes, not only on logits: each test injects a
plausible timm mistake that only the dynamic route takes (the model is correct at its own size) and that the
logits alone, under the round 1e-3 tolerance the harness used before, let through."""
from __future__ import annotations

import timm.models.eva as eva_module
import timm.models.vision_transformer as vit_module
from timm.layers.pos_embed_sincos import RotaryEmbeddingCat

from harness.families import FAMILIES, Geometry
from harness.families.vit import POS_EMBED_ADDED

OLD_OUTPUTS_ATOL = 1e-3   # the round number fidelity_outputs_atol was before the tolerances were calibrated

TINY = '''
name: tiny
models:
  - {name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64}
  - {name: eva02_tiny_patch14_224, embed_dim: 32, num_heads: 2, depth: 1, img_size: 56, ref_feat_shape: [4, 4],
     sizes: [[56, 112]]}
origins: [timm]
sizes: [[64, 128]]
paths: [dynamic]
'''


def test_correct_timm_passes_with_forward_tensors_compared(run_matrix):
    results = run_matrix(TINY)
    assert {r.status for r in results.values()} == {'passed'}, [r.reason for r in results.values()]
    vit = results['vit_tiny_patch16_224-timm-64x128-dynamic']
    assert vit.fidelity_weights_max_abs_diff is not None and vit.fidelity_weights_max_abs_diff < 1e-6
    eva = results['eva02_tiny_patch14_224-timm-56x112-dynamic']
    assert eva.fidelity_weights_max_abs_diff < 1e-6


def test_bilinear_pos_embed_resample_fails_dynamic_fidelity(run_matrix, monkeypatch):
    """resample_abs_pos_embed interpolating bilinear instead of bicubic: the logits move by about 1e-4, under the
    old outputs tolerance; the position embedding _pos_embed adds differs by about 2e-2."""
    original = vit_module.resample_abs_pos_embed

    def bilinear(posemb, new_size, old_size=None, num_prefix_tokens=1, interpolation='bicubic', antialias=True,
                 verbose=False):
        return original(posemb, new_size, old_size, num_prefix_tokens, 'bilinear', antialias, verbose)

    monkeypatch.setattr(vit_module, 'resample_abs_pos_embed', bilinear)
    monkeypatch.setattr(eva_module, 'resample_abs_pos_embed', bilinear)
    for r in run_matrix(TINY).values():
        assert r.status == 'failed' and r.failed_checks == ['fidelity'], r.reason
        assert r.fidelity_worst_tensor == POS_EMBED_ADDED and r.fidelity_weights_max_abs_diff > 1e-3
        assert r.fidelity_outputs_max_abs_diff < OLD_OUTPUTS_ATOL   # what the logits alone showed


def test_rope_transposed_on_a_non_square_grid_fails_dynamic_fidelity(run_matrix, monkeypatch):
    """The rotary embedding built for (W, H) instead of (H, W): same token count, wrong positions."""
    original = RotaryEmbeddingCat.get_embed

    def transposed(self, shape=None, dtype=None):
        return original(self, list(shape)[::-1] if shape is not None else None, dtype)

    monkeypatch.setattr(RotaryEmbeddingCat, 'get_embed', transposed)
    (r,) = run_matrix(TINY.replace('  - {name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, '
                                   'img_size: 64}\n', '')).values()
    assert r.status == 'failed' and r.failed_checks == ['fidelity'], r.reason
    assert r.fidelity_worst_tensor == 'rope as _pos_embed returns it'


def test_no_embed_class_adds_no_position_to_prefix_tokens():
    """deit3-style models (no_embed_class) keep no position for their class token: the expected tensor is zero
    there, then the resampled grid."""
    import torch
    vit = FAMILIES['vit']
    geometry = Geometry((32, 32), (16, 16), (2, 2), 8, 8, 0, num_prefix_tokens=1, pos_prefix_tokens=0)
    pos_embed = torch.randn(1, 4, 8)
    (added,) = vit.expected_forward_tensors({'pos_embed': pos_embed}, None, geometry, geometry).values()
    assert added.shape == (1, 5, 8) and not added[:, 0].any() and torch.equal(added[:, 1:], pos_embed)
