"""Real checkpoints (`{file: PATH}`, `hub`) get the checks synthesized ones get: the reference is the file's own
tensors, read back by the harness through the layouts it knows, so `reload` compares timm's native-size load with
the file and fidelity's oracle resamples the file; reference models share the checkpoint's head."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from harness.checkpoints.origins import origin_named
from harness.checkpoints.source import hub_source, read_back, unwrap
from harness.checkpoints.synthesize import seeded_model

pytestmark = pytest.mark.filterwarnings('ignore:Using a non-tuple sequence:UserWarning',
                                        'ignore:torch.searchsorted:UserWarning')

TINY_VIT = {'embed_dim': 32, 'depth': 1, 'num_heads': 2}
# a user's fine-tuned checkpoints: timm models with a 10-class head, saved as users save them
FINE_TUNED = {
    'vit': ('vit_tiny_patch16_224', {**TINY_VIT, 'img_size': 64}, '.safetensors', [64, 96]),
    'swin': ('swin_tiny_patch4_window7_224', {'embed_dim': 16, 'depths': [2, 2], 'num_heads': [1, 2], 'img_size': 64,
                                              'window_size': 4}, '.pth', [64, 96]),
    'eva': ('eva02_tiny_patch14_224', {**TINY_VIT, 'img_size': 56, 'ref_feat_shape': [4, 4]}, '.pth', [56, 84]),
}
# timm reads a 5x13 window's table (15 x 15 rows) as an 8x8 window's on every load (matrices/zoo-swin.yaml)
SWIN_5X13 = ('swin_small_patch4_window7_224', {'embed_dim': 16, 'depths': [2, 2], 'num_heads': [1, 2],
                                               'img_size': [40, 104], 'window_size': [5, 13]})


def _save(state: dict, path) -> None:
    if path.suffix == '.safetensors':
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


def _entry(name: str, kwargs: dict, **extra) -> str:
    return '{' + ', '.join(f'{k}: {v}' for k, v in {'name': name, **kwargs, **extra}.items()) + '}'


def test_fine_tuned_checkpoints_pass_every_path_with_reload_and_the_oracle(run_matrix, tmp_path):
    """`{file: PATH, num_classes: 10}` of a ViT, a Swin and an EVA whose matrix entries say nothing of the head:
    every path passes (the dynamic references are built with the file's 10 classes), reload is computed from
    the file and every tensor is read back from it."""
    entries = []
    for label, (name, kwargs, suffix, size) in FINE_TUNED.items():
        path = tmp_path / f'{label}{suffix}'
        _save(timm.create_model(name, num_classes=10, **kwargs).state_dict(), path)
        entries.append(_entry(name, kwargs, origins=f'[{{file: {path}, num_classes: 10}}]', sizes=f'[{size}]'))
    results = run_matrix('name: fine-tuned\nmodels:\n' + ''.join(f'  - {e}\n' for e in entries) + 'num_images: 2\n')
    assert len(results) == 9
    for case_id, r in results.items():
        assert r.status == 'passed', (case_id, r.reason)
        assert r.native_max_abs_diff == 0.0 and r.reference_note is None, case_id
        assert (r.fidelity_outputs_max_abs_diff if r.path == 'dynamic' else r.fidelity_weights_max_abs_diff) < 1e-6


def test_a_file_fails_reload_where_timm_changes_it_on_load_as_a_synthesized_checkpoint_does(run_matrix, tmp_path):
    """The Swin 5x13 window, which timm scrambles on every load: as `{file:}` it fails reload by as much as the
    same weights as origin `timm` (before, a file's reference was timm's own load, and it passed)."""
    name, kwargs = SWIN_5X13
    path = tmp_path / 'swin5x13.safetensors'
    _save(seeded_model(name, kwargs, seed=0).state_dict(), path)
    model = _entry(name, kwargs)
    results = run_matrix(f'name: swin5x13\nmodels: [{model}]\norigins: [timm, {{file: {path}}}]\n'
                         f'sizes: [[40, 104]]\npaths: [create]\nnum_images: 2\n')
    synthesized, user = results.values()
    assert user.origin == 'file=swin5x13' and user.reference_note is None
    for r in (synthesized, user):
        assert r.status == 'failed' and r.failed_checks[0] == 'reload', r.reason
        assert 'relative_position_bias_table' in r.native_worst_tensor
    assert user.native_max_abs_diff == pytest.approx(synthesized.native_max_abs_diff)
    assert user.native_max_abs_diff > 0.5   # in the table's own unit: far off


@pytest.mark.parametrize('origin, name, kwargs, not_read_back', [
    ('timm', 'vit_tiny_patch16_224', {**TINY_VIT, 'img_size': 32}, []),
    ('openai_clip', 'vit_base_patch16_clip_224', {**TINY_VIT, 'img_size': 32}, ['head.bias']),   # CLIP's proj: none
    ('open_clip', 'vit_base_patch16_clip_224', {**TINY_VIT, 'img_size': 32}, ['head.bias']),
    ('big_vision', 'vit_tiny_patch16_224', {**TINY_VIT, 'img_size': 32}, []),
    ('dinov2', 'vit_small_patch14_reg4_dinov2', {**TINY_VIT, 'img_size': 28}, ['cls_token']),   # timm folds it
    ('microsoft', 'swin_tiny_patch4_window7_224', FINE_TUNED['swin'][1], []),
    ('classic_vit', 'naflexvit_base_patch16_gap', {**TINY_VIT, 'img_size': 32}, []),
])
def test_every_layout_is_read_back_and_what_it_derives_is_named(origin, name, kwargs, not_read_back):
    """Each layout writer inverted by tracing: every tensor a layout stores is read back exactly from what it
    wrote (in its wrapper: OpenCLIP's `state_dict` of `module.` keys, the Swin repository's `model`); a tensor the
    layout derives is not, and the note names it."""
    model = seeded_model(name, kwargs, seed=1)
    contents, expected = origin_named(origin).convert(model)
    source = read_back(model, unwrap(contents))
    floats = [k for k, v in expected.items() if v.is_floating_point()]
    assert source.from_file == len(floats) - len(not_read_back)
    for key in floats:
        if key not in not_read_back:
            assert torch.equal(source.tensors[key], expected[key]), key
    assert (source.note is None) == (not not_read_back)
    assert all(key in source.note for key in not_read_back) if not_read_back else True


def test_a_file_in_no_known_layout_says_so_instead_of_comparing_timm_with_itself():
    model = seeded_model('vit_tiny_patch16_224', {**TINY_VIT, 'img_size': 32}, seed=1)
    source = read_back(model, {f'encoder.{k}': v for k, v in model.state_dict().items()})
    assert source.from_file == 0
    assert 'in none of the layouts' in source.note and 'reload compares nothing' in source.note


def test_a_hub_checkpoint_is_read_back_from_the_local_cache(tmp_path, monkeypatch):
    """`hub`: the file timm loaded, found in the Hugging Face cache without the network; a file not cached is
    said to be missing."""
    import huggingface_hub.constants
    model = seeded_model('vit_tiny_patch16_224', {**TINY_VIT, 'img_size': 32}, seed=1)
    model.pretrained_cfg = {'hf_hub_id': 'timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k'}
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path))
    assert 'not in the local cache' in hub_source(model).note
    repo = tmp_path / 'models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k'
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text('abc123')
    (repo / 'snapshots' / 'abc123').mkdir(parents=True)
    state = {k: v + 1 for k, v in model.state_dict().items()}   # not the model's own: read from the file
    _save(state, repo / 'snapshots' / 'abc123' / 'model.safetensors')
    source = hub_source(model)
    assert source.note is None and torch.equal(source.tensors['pos_embed'], state['pos_embed'])
