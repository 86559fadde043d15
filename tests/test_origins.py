"""The origin registry: every origin one record, each with every writer it needs, its files vetted as a user's
would be, and `harness repro` on a case of each origin writing a script that runs (or exiting 2 with one line).

The layout writers' own round trips are in tests/test_layouts.py; its first case of each origin is the example
model here.
"""
from __future__ import annotations

import dataclasses

import pytest
import timm
import torch

from harness import cli
from harness.checkpoints import origins as registry
from harness.checkpoints.origins import FILE_ORIGIN, Origin, origin_named, origins, origins_of
from harness.checkpoints.synthesize import seeded_model
from harness.checkpoints.vetting import checkpoint_file_problem, read_checkpoint
from harness.families import FAMILIES, families
from harness.store.case_result import CaseResult
from tests.test_layouts import CASES
from tests.test_repro import _recorded, assert_standalone, run_here

EXAMPLES = {case.origin: case for case in reversed(CASES)}   # the first case of each origin
SYNTHESIZED = [name for name, origin in origins().items() if origin.synthesized]
NAFLEX_MATRIX = '''
name: classic
models: [{name: naflexvit_base_patch16_gap, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64,
          pos_embed_grid_size: [4, 4]}]
origins: [classic_vit]
sizes: [64]
paths: [create]
'''


def test_every_origin_has_every_writer_it_needs():
    """A synthesized origin: a layout writer and its saver (synthesis, matrix validation), a compact writer
    (repro), a file name whose format the vetting reads, and a round-trip example; the others (hub, file) none
    of them, since nothing is written for them. Every family an origin names is a registered family."""
    families()
    for name, origin in origins().items():
        writers = (origin.convert, origin.save, origin.repro_writer)
        if origin.synthesized:
            assert all(map(callable, writers)), name
            assert not origin.custom_load or origin.file_format == 'npz', name
            assert origin.file_format in ('safetensors', 'npz', 'pickle'), name
            assert name in EXAMPLES, f'{name}: no round trip in tests/test_layouts.py CASES'
        else:
            assert writers == (None, None, None), name
        assert set(origin.families or ()) <= set(FAMILIES), name
    assert [o.rank for o in origins().values()] == sorted({o.rank for o in origins().values()})
    for family in FAMILIES:
        assert {'timm', 'hub', 'file'} <= set(origins_of(family)), family


def test_family_membership_is_the_origins_list():
    assert origins_of('vit') == ['timm', 'openai_clip', 'open_clip', 'dinov2', 'big_vision', 'hub', 'file']
    assert origins_of('swin_v2') == ['timm', 'microsoft', 'hub', 'file']
    assert origins_of('naflexvit') == ['timm', 'classic_vit', 'hub', 'file']
    assert origins_of('eva') == ['timm', 'hub', 'file']   # an EVA is a ViT subclass, but no ViT layout holds it


def test_a_layout_that_cannot_hold_the_model_says_why_instead_of_raising():
    """The zoo sweep asks every layout of every ViT whether it fits: a DINOv2 layout of a model without a class
    token (it raised KeyError 'cls_token' before) is a reason, not a crash."""
    with torch.device('meta'):
        model = timm.create_model('vit_tiny_patch16_224', class_token=False, reg_tokens=4, global_pool='avg',
                                  no_embed_class=True, depth=1)
    assert origin_named('dinov2').layout_problem(model) == 'DINOv2 releases have a class token; this model has none'


def test_an_origin_registered_twice_is_refused(monkeypatch):
    monkeypatch.setattr(registry, '_REGISTRY', dict(registry._REGISTRY))
    with pytest.raises(ValueError, match="origin 'timm' is registered twice"):
        registry.register(Origin('timm', 'again', rank=99))


@pytest.mark.parametrize('name', SYNTHESIZED)
@torch.no_grad()
def test_both_writers_files_pass_the_vetting_and_timm_recovers_the_compact_writers_reference(name, tmp_path):
    """What a user would hand the harness as `{file:}` in this layout is read the safe way; the compact writer a
    script carries is exact too: timm loads its file to the state dict it returns."""
    origin, example = origin_named(name), EXAMPLES[name]
    source = seeded_model(example.model, example.kwargs, seed=0)
    strict, compact = tmp_path / 'strict' / origin.filename, tmp_path / 'compact' / origin.filename
    for path in (strict, compact):
        path.parent.mkdir()
    origin.write(source, strict)
    reference = origin.repro_writer(source, compact)
    for path in (strict, compact):
        assert checkpoint_file_problem(path, origin.custom_load) is None, path
        assert read_checkpoint(path, origin.custom_load), path
    size = example.kwargs['img_size']
    overlay = dict(file=str(compact), num_classes=source.num_classes, custom_load=origin.custom_load,
                   input_size=(3, *((size, size) if isinstance(size, int) else size)))
    loaded = timm.create_model(example.model, pretrained=True, pretrained_cfg_overlay=overlay, **example.kwargs)
    recovered = loaded.state_dict()
    assert recovered.keys() == reference.keys()
    assert [k for k in reference if not torch.equal(recovered[k], reference[k])] == []


def _failed_reload(origin: str) -> CaseResult:
    """A recorded case of the origin's example model whose reload check failed."""
    model = EXAMPLES.get(origin, EXAMPLES['timm'])
    size = model.kwargs['img_size']
    size = [size, size] if isinstance(size, int) else list(size)
    return CaseResult(case_id=f'{model.model}-{origin}-{size[0]}x{size[1]}-create', matrix='m', model=model.model,
                      origin=origin, img_size=size, patch_size=None, window_size=None, path='create',
                      model_name=model.model, model_overrides=dict(model.kwargs), status='failed',
                      failed_checks=['reload'], reason='reload: differs', timm_version=timm.__version__)


@pytest.mark.parametrize('name', list(origins()))
def test_harness_repro_on_a_case_of_each_origin_writes_a_script_or_exits_2_with_one_line(name, tmp_path, capsys):
    """A synthesized origin's script saves the checkpoint with the origin's compact writer, and on the installed
    (correct) timm its reload check passes; `hub` gets a script too; a `{file:}` case whose matrix is gone cannot
    name its file: one line, exit 2."""
    case = _failed_reload(name)
    script = tmp_path / 'repro.py'
    code = cli.main(['repro', str(_recorded(tmp_path / 'run', case)), case.case_id, '--out', str(script)])
    err = capsys.readouterr().err
    if name == FILE_ORIGIN:
        assert code == 2 and err.startswith('error: ') and len(err.strip().splitlines()) == 1, err
        return
    assert code == 0, err
    text = script.read_text()
    assert_standalone(text)
    if origin_named(name).synthesized:
        assert f'{origin_named(name).repro_writer.__name__}(source, file)' in text
        code, printed = run_here(script)
        assert code == 0 and 'reload: ok' in printed, printed


@pytest.mark.parametrize('with_matrix', [False, True], ids=['record', 'matrix'])
def test_an_origin_without_a_script_writer_exits_2_with_one_line(with_matrix, tmp_path, monkeypatch, capsys):
    """A NaFlexVit case from a classic-ViT checkpoint, had classic_vit no compact writer: one line, whether the
    case is rebuilt from its record or found in its matrix (that one ended in a KeyError and a traceback)."""
    from harness.spec.cases import expand
    from harness.spec.matrix import load_matrix
    matrix = tmp_path / 'matrix.yaml'
    matrix.write_text(NAFLEX_MATRIX)
    (found,) = expand(load_matrix(matrix))
    case = dataclasses.replace(_failed_reload('classic_vit'), case_id=found.case_id)
    run_dir = _recorded(tmp_path / 'run', case, matrix if with_matrix else None)
    monkeypatch.setitem(registry._REGISTRY, 'classic_vit',
                        dataclasses.replace(origin_named('classic_vit'), repro_writer=None))
    assert cli.main(['repro', str(run_dir), case.case_id]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: no script for classic_vit checkpoints yet') and len(err.strip().splitlines()) == 1
