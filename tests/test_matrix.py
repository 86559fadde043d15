"""Loading, validating and expanding YAML matrices (harness.spec.matrix, harness.spec.cases).

Every matrix is written inline under tmp_path; models are only ever built on the meta device by the
validator, so the whole module runs in seconds. Error tests check the three things a user needs from a
MatrixError: the file, the entry (``models[1]``, ``origins[0].file``, ``tolerances.parity_atol``...) and
what was expected.
"""
from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from packaging.specifiers import SpecifierSet
from safetensors.torch import save_file

from harness.spec.cases import Case, expand, expectation_for
from harness.spec.matrix import (
    PATHS,
    Expectation,
    Matrix,
    MatrixError,
    ModelSpec,
    OriginSpec,
    Selection,
    TimingConfig,
    Tolerances,
    load_matrix,
    structure_problems,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / 'matrices').glob('*.yaml'))

VIT = 'vit_tiny_patch16_224'
SWIN = 'swin_tiny_patch4_window7_224'
DINO = 'vit_small_patch14_dinov2'


@pytest.fixture(scope='module')
def known_models() -> list[str]:
    return timm.list_models()


def write(tmp_path: Path, text: str, name: str = 'matrix.yaml') -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, known_models: list[str]) -> Matrix:
    return load_matrix(write(tmp_path, text), known_models=known_models)


def error_of(tmp_path: Path, text: str, known_models: list[str]) -> tuple[Path, MatrixError]:
    path = write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path, known_models=known_models)
    return path, info.value


def problem(err: MatrixError, where: str, *fragments: str) -> str:
    """The one problem line located at ``where`` that also contains every fragment; fails otherwise."""
    lines = [p for p in err.problems if p.startswith(f'{where}: ') and all(f in p for f in fragments)]
    assert len(lines) == 1, f'no single problem at {where!r} with {fragments}; got:\n{err}'
    assert lines[0] in str(err)
    return lines[0]


def assert_names_file(err: MatrixError, path: Path) -> None:
    assert isinstance(err, ValueError)
    assert err.path == str(path)
    assert str(err).startswith(f'{path}: invalid matrix')


MINIMAL = f"""\
name: tiny
models: [{VIT}]
origins: [timm]
sizes: [224]
"""


# --- a valid matrix ---------------------------------------------------------------------------------------

FULL = f"""\
name: full
models:
  - {VIT}
  - {{name: {VIT}, label: tiny_d2, depth: 2, img_size: [32, 64]}}
  - {{name: {SWIN}, embed_dim: 32, depths: [1, 1, 2, 1], num_heads: [1, 2, 2, 4], img_size: 128,
     origins: [timm, microsoft], sizes: [128, [128, 192]], patch_sizes: [4], window_sizes: [7, 4]}}
origins: [timm, big_vision]
sizes: [224, [224, 448]]
patch_sizes: [16, 8]
seed: 3
num_images: 2
tolerances: {{parity_atol: 0.01, parity_min_cosine: 1, drift_min_cosine: 0.5}}
timing: {{enabled: false, dtype: bf16, batch_size: 2}}
expect:
  - match: {{model: {VIT}, origin: timm, img_size: [224, 448], path: dynamic}}
    checks: [parity]
    reason: dynamic path on a rectangular target
    timm: "<1.0.3"
  - match: {{model: {VIT}, patch_size: 8}}
    checks: [load, fidelity]
    reason: patch 8 everywhere
"""


def test_valid_matrix_loads(tmp_path, known_models):
    path = write(tmp_path, FULL)
    m = load_matrix(path, known_models=known_models)
    assert m.name == 'full'
    assert m.path == str(path)

    plain, labelled, swin = m.models
    assert plain == ModelSpec(VIT)
    assert plain.label == VIT and plain.kwargs == {}
    assert labelled.name == VIT and labelled.alias == 'tiny_d2' and labelled.label == 'tiny_d2'
    assert labelled.kwargs == {'depth': 2, 'img_size': (32, 64)}
    assert swin.name == SWIN and swin.label == SWIN
    # lists are frozen to tuples (specs stay hashable), an int img_size stays an int (some models take no other);
    # axes keys are not constructor overrides
    assert swin.kwargs == {'embed_dim': 32, 'depths': (1, 1, 2, 1), 'num_heads': (1, 2, 2, 4), 'img_size': 128}
    assert not set(swin.kwargs) & {'origins', 'sizes', 'patch_sizes', 'window_sizes', 'paths', 'label', 'name'}
    hash(swin)

    assert m.origins == (OriginSpec('timm'), OriginSpec('big_vision'))
    assert m.sizes == ((224, 224), (224, 448))          # int -> square, [H, W] -> rectangular
    assert m.patch_sizes == (16, 8)
    assert m.window_sizes == (None,) and dict(swin.axes)['window_sizes'] == (7, 4)   # windows: the Swin's own
    assert m.paths == PATHS == ('create', 'set_input_size', 'dynamic')   # default: all three
    assert m.seed == 3 and m.num_images == 2

    assert m.tolerances == Tolerances(parity_atol=0.01, parity_min_cosine=1, drift_min_cosine=0.5)
    assert m.tolerances.fidelity_weights_atol == Tolerances().fidelity_weights_atol   # untouched default
    assert m.tolerances.drift_min_top1 is None
    assert m.timing == TimingConfig(enabled=False, dtype='bf16', batch_size=2)
    assert (m.timing.warmup, m.timing.budget_s) == (TimingConfig().warmup, TimingConfig().budget_s)

    first, second = m.expect
    assert dict(first.match) == {'model': VIT, 'origin': 'timm', 'img_size': (224, 448), 'path': 'dynamic'}
    assert first.reason == 'dynamic path on a rectangular target'
    assert first.timm == SpecifierSet('<1.0.3')
    assert dict(second.match) == {'model': VIT, 'patch_size': 8} and second.timm is None
    assert (first.checks, second.checks) == (('parity',), ('load', 'fidelity'))


def test_defaults_when_optional_sections_absent(tmp_path, known_models):
    m = load(tmp_path, MINIMAL, known_models)
    assert m.models == (ModelSpec(VIT),)
    assert m.origins == (OriginSpec('timm'),)
    assert m.sizes == ((224, 224),)
    assert m.patch_sizes == (None,) and m.window_sizes == (None,)
    assert m.paths == PATHS
    assert (m.seed, m.num_images) == (0, 4)
    assert m.tolerances == Tolerances() and m.timing == TimingConfig() and m.expect == ()


def test_paths_subset_and_each_timing_dtype(tmp_path, known_models):
    for dtype in ('fp32', 'bf16', 'fp16'):
        m = load(tmp_path, MINIMAL + f'paths: [dynamic, create]\ntiming: {{dtype: {dtype}}}\n', known_models)
        assert m.paths == ('dynamic', 'create')
        assert m.timing.dtype == dtype


def test_file_origin_resolves_relative_to_the_matrix(tmp_path, known_models):
    (tmp_path / 'ckpts').mkdir()
    checkpoint, npz = tmp_path / 'ckpts' / 'mine.safetensors', tmp_path / 'ckpts' / 'other.npz'
    save_file({'w': torch.ones(2)}, str(checkpoint))
    np.savez(npz, w=np.ones(2))
    m = load(tmp_path, MINIMAL.replace('origins: [timm]', 'origins: [{file: ckpts/mine.safetensors, num_classes: 10}, '
                                                          '{file: ckpts/other.npz, custom_load: true}]'),
             known_models)
    assert m.origins == (OriginSpec('file', file=str(checkpoint), num_classes=10),
                         OriginSpec('file', file=str(npz), custom_load=True))
    assert expand(m)[0].case_id == f'{VIT}-file=mine-224x224-create'


def test_expectation_matches(tmp_path, known_models):
    m = load(tmp_path, FULL, known_models)
    first, second = m.expect
    fields = {'model': VIT, 'label': VIT, 'origin': 'timm', 'img_size': (224, 448), 'patch_size': 16,
              'window_size': None, 'path': 'dynamic', 'state': 'fp32'}
    assert first.matches(fields, '1.0.2')
    assert first.matches(fields, '1.0.2rc1')            # pre-releases count (PEP 440 keeps 1.0.3.dev0 out of <1.0.3)
    assert not first.matches(fields, '1.0.3.dev0')
    assert not first.matches(fields, '1.0.3')
    assert not first.matches(fields, '1.0.31')
    assert not first.matches({**fields, 'path': 'create'}, '1.0.2')
    assert not first.matches({**fields, 'img_size': (448, 224)}, '1.0.2')
    assert not second.matches(fields, '1.0.2')           # patch 16
    assert second.matches({**fields, 'patch_size': 8}, '0.9.0')   # no timm specifier: every release
    assert Expectation((), 'everything', ('load',)).matches(fields, '1.0.31')

    cases = {c.case_id: c for c in expand(m)}
    dyn16 = cases[f'{VIT}-timm-224x448-patch16-dynamic']
    dyn8 = cases[f'{VIT}-timm-224x448-patch8-dynamic']
    create16 = cases[f'{VIT}-timm-224x448-patch16-create']
    assert dyn16.fields() == fields
    assert expectation_for(dyn16, m, '1.0.2') is first
    assert expectation_for(dyn16, m, '1.0.31') is None
    assert expectation_for(dyn8, m, '1.0.2') is first     # the first match wins
    assert expectation_for(dyn8, m, '1.0.31') is second
    assert expectation_for(create16, m, '1.0.2') is None
    # `model` matches the timm name, so the labelled entry of the same model matches too
    assert expectation_for(cases['tiny_d2-timm-224x448-patch8-create'], m, '1.0.31') is second


# --- per-model axes and expansion -------------------------------------------------------------------------

PER_MODEL = f"""\
name: per_model
models:
  - {VIT}
  - {{name: {SWIN}, origins: [microsoft], sizes: [256], patch_sizes: [4], window_sizes: [7, 8]}}
origins: [timm, big_vision]      # big_vision would not fit the Swin, which has its own origins
sizes: [224, [224, 448]]
patch_sizes: [16, 8]
paths: [create, set_input_size]
"""


def test_model_axes_replace_the_matrix_axes_for_that_model_only(tmp_path, known_models):
    m = load(tmp_path, PER_MODEL, known_models)
    vit, swin = m.models
    assert vit.axes == ()
    assert set(dict(swin.axes)) == {'origins', 'sizes', 'patch_sizes', 'window_sizes'}

    assert m.axes_for(vit) == {'origins': (OriginSpec('timm'), OriginSpec('big_vision')),
                               'sizes': ((224, 224), (224, 448)), 'patch_sizes': (16, 8),
                               'window_sizes': (None,), 'paths': ('create', 'set_input_size'), 'states': ('fp32',)}
    assert m.axes_for(swin) == {'origins': (OriginSpec('microsoft'),), 'sizes': ((256, 256),),
                                'patch_sizes': (4,), 'window_sizes': (7, 8),
                                'paths': ('create', 'set_input_size'), 'states': ('fp32',)}   # paths inherited
    # the matrix's own axes are untouched
    assert m.origins == (OriginSpec('timm'), OriginSpec('big_vision')) and m.sizes == ((224, 224), (224, 448))

    cases = expand(m)
    by_model = {label: [c for c in cases if c.model.label == label] for label in (VIT, SWIN)}
    assert {(c.origin.name, c.img_size, c.patch_size, c.window_size, c.path) for c in by_model[SWIN]} == set(
        itertools.product(['microsoft'], [(256, 256)], [4], [7, 8], ['create', 'set_input_size']))
    assert {c.origin.name for c in by_model[VIT]} == {'timm', 'big_vision'}
    assert {c.img_size for c in by_model[VIT]} == {(224, 224), (224, 448)}


def test_model_axes_satisfy_required_keys(tmp_path, known_models):
    m = load(tmp_path, f"""\
        name: own
        models:
          - {{name: {DINO}, origins: [dinov2], sizes: [[56, 112]]}}
          - {{name: {SWIN}, origins: [timm], sizes: [224]}}
        """, known_models)
    assert m.origins == () and m.sizes == ()
    assert [c.case_id for c in expand(m)] == [
        f'{DINO}-dinov2-56x112-{p}' for p in PATHS] + [f'{SWIN}-timm-224x224-{p}' for p in PATHS]


@pytest.mark.parametrize('text, expected', [
    (f'name: own\nmodels: [{{name: {DINO}, origins: [dinov2], sizes: [56]}}]\n', []),
    (f'name: own\nmodels: [{{name: {DINO}, origins: [dinov2], targets: auto}}]\n', []),
    (f'name: a\nmodels: [{DINO}]\nsizes: [56]\n', ['origins: missing']),
    (f'name: a\nmodels: [{{name: {DINO}, sizes: [56]}}, {DINO}]\norigns: [timm]\n',
     ['origns: unknown key', 'origins: missing']),
    ('origins: [timm]\nsizes: [56]\n', ['name: missing', 'models: missing']),
])
def test_structure_problems_are_load_matrixs_own_found_without_timm(tmp_path, known_models, text, expected):
    """harness.runtime.preflight answers these before importing timm: each must be a problem load_matrix reports too."""
    found = structure_problems(yaml.safe_load(text))
    assert [p.split(';')[0] for p in found] == expected
    if found:
        _, err = error_of(tmp_path, text, known_models)
        assert set(found) <= set(err.problems)
    else:
        load(tmp_path, text, known_models)


def test_expand_cross_product_and_windows_only_for_swin(tmp_path, known_models):
    m = load(tmp_path, PER_MODEL, known_models)
    cases = expand(m)
    vit_cases = [c for c in cases if c.model.name == VIT]
    swin_cases = [c for c in cases if c.model.name == SWIN]
    # ViT: 2 origins x 2 sizes x 2 patches x 2 paths; windows are the Swin's own (a ViT's: a matrix error)
    assert len(vit_cases) == 2 * 2 * 2 * 2
    assert all(c.window_size is None for c in vit_cases)
    assert {(c.origin.name, c.img_size, c.patch_size, c.path) for c in vit_cases} == set(itertools.product(
        ['timm', 'big_vision'], [(224, 224), (224, 448)], [16, 8], ['create', 'set_input_size']))
    # Swin: 1 origin x 1 size x 1 patch x 2 windows x 2 paths
    assert len(swin_cases) == 4
    assert len(cases) == 20
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == len(ids)
    assert f'{VIT}-timm-224x224-patch8-set_input_size' in ids
    assert f'{VIT}-big_vision-224x448-patch16-create' in ids
    assert f'{SWIN}-microsoft-256x256-patch4-window8-set_input_size' in ids
    assert not any('window' in i for i in ids if i.startswith(VIT))


def test_case_ids_without_patch_or_window_axes(tmp_path, known_models):
    m = load(tmp_path, f"""\
        name: ids
        models: [{VIT}, {{name: {VIT}, label: tiny_d2, depth: 2}}, {SWIN}]
        origins: [timm]
        sizes: [[224, 448]]
        window_sizes: []
        paths: [set_input_size]
        """, known_models)
    cases = expand(m)
    assert [c.case_id for c in cases] == [f'{VIT}-timm-224x448-set_input_size',
                                          'tiny_d2-timm-224x448-set_input_size',
                                          f'{SWIN}-timm-224x448-set_input_size']
    assert [c.group for c in cases] == [f'{VIT}-timm', 'tiny_d2-timm', f'{SWIN}-timm']
    assert all(c.patch_size is None and c.window_size is None for c in cases)
    assert cases[2].family.name == 'swin' and cases[0].family.name == 'vit'


def test_swin_window_part_in_case_id(tmp_path, known_models):
    m = load(tmp_path, f"""\
        name: w
        models: [{SWIN}]
        origins: [microsoft]
        sizes: [224]
        window_sizes: [7]
        paths: [dynamic]
        """, known_models)
    (case,) = expand(m)
    assert isinstance(case, Case)
    assert case.case_id == f'{SWIN}-microsoft-224x224-window7-dynamic'


# --- validation errors ------------------------------------------------------------------------------------

def test_unknown_top_level_key(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL + 'bogus: 1\n', known_models)
    assert_names_file(err, path)
    problem(err, 'bogus', 'unknown key', "'models'", "'origins'")
    assert len(err.problems) == 1


def test_missing_required_keys(tmp_path, known_models):
    path, err = error_of(tmp_path, 'seed: 1\n', known_models)
    assert_names_file(err, path)
    for key, expected in (('name', 'a string'), ('models', 'a list of model names'),
                          ('origins', 'a list of origin names'), ('sizes', 'a list of sizes')):
        problem(err, key, 'missing', expected)

    path, err = error_of(tmp_path, f'name: x\nmodels: [{VIT}]\n', known_models)
    assert {p.split(':')[0] for p in err.problems} == {'origins', 'sizes'}


@pytest.mark.parametrize('extra, where, fragments', [
    ('sizes: big', 'sizes', ('expected a list of sizes (int or [H, W])', "'big'")),
    ('sizes: [224, big]', 'sizes[1]', ('expected a positive int (square) or [H, W]', "'big'")),
    ('sizes: [224, 224, [224, 0]]', 'sizes[2]', ('expected a positive int (square) or [H, W]', '[224, 0]')),
    ('sizes: [[224, 224, 3]]', 'sizes[0]', ('[H, W]', '[224, 224, 3]')),
    ('sizes: [true]', 'sizes[0]', ('positive int', 'True')),
    ('patch_sizes: [0]', 'patch_sizes[0]', ('expected a positive int', '0')),
    ('patch_sizes: 16', 'patch_sizes', ('expected a list of ints', '16')),
    ('window_sizes: [7, x]', 'window_sizes[1]', ('expected a positive int', "'x'")),
    ('paths: [create, bogus]', 'paths[1]', ('unknown path', "'bogus'", "'set_input_size'")),
    ('tolerances: {parity_atol: loose}', 'tolerances.parity_atol', ('expected a number (or null)', "'loose'")),
    ('tolerances: {bogus: 1}', 'tolerances.bogus', ('unknown key', 'parity_atol')),
    ('tolerances: [1, 2]', 'tolerances', ('expected a mapping',)),
    ('timing: {dtype: fp64}', 'timing.dtype', ("['fp32', 'bf16', 'fp16']", "'fp64'")),
    ('timing: {batch_size: 2.5}', 'timing.batch_size', ('expected an int', '2.5')),
    ('timing: {enabled: 1}', 'timing.enabled', ('true or false', '1')),
    ('timing: {batch_size: 0}', 'timing.batch_size', ('expected an int >= 1 or null', 'got 0')),
    ('seed: -1', 'seed', ('expected an int >= 0', '-1')),
    ('num_images: 0', 'num_images', ('expected an int >= 1', '0')),
    ('name: [a]', 'name', ('expected a string',)),
    ('expect: [{match: {bogus: 1}, checks: [load], reason: r}]', 'expect[0].match.bogus', ('unknown field', "'model'")),
    ('expect: [{match: {path: create}}]', 'expect[0]', ('reason',)),
    ('expect: [{match: {path: create}, checks: [load], reason: r, extra: 1}]', 'expect[0]',
     ('unknown keys', "'extra'")),
    ('expect: [{match: {img_size: [1, 2, 3]}, checks: [load], reason: r}]', 'expect[0].match.img_size', ('[H, W]',)),
    ('expect: [{match: {path: create}, checks: [load], reason: r, timm: "1.0"}]', 'expect[0].timm',
     ('version specifier', "'1.0'")),
    ('expect: [{match: {path: create}, reason: r}]', 'expect[0].checks', ('non-empty list', 'parity', 'None')),
    ('expect: [{match: {path: create}, checks: [], reason: r}]', 'expect[0].checks', ('non-empty list',)),
    ('expect: [{match: {path: create}, checks: [speed], reason: r}]', 'expect[0].checks', ("'speed'",)),
])
def test_wrong_types_and_values(tmp_path, known_models, extra, where, fragments):
    key = extra.split(':')[0]
    text = ''.join(line + '\n' for line in MINIMAL.splitlines() if line.split(':')[0] != key) + extra + '\n'
    path, err = error_of(tmp_path, text, known_models)
    assert_names_file(err, path)
    problem(err, where, *fragments)


def test_unknown_model_suggests_close_matches(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{SWIN}, vit_tiny_patch16_22]'), known_models)
    assert_names_file(err, path)
    line = problem(err, 'models[1]', "unknown timm model 'vit_tiny_patch16_22'", 'did you mean')
    assert VIT in line.split('did you mean')[1]

    _, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', '[zzqqxx_nothing_like_it]'), known_models)
    line = problem(err, 'models[0]', "unknown timm model 'zzqqxx_nothing_like_it'")
    assert 'did you mean' not in line


@pytest.mark.parametrize('model, why', [
    ('mvitv2_tiny', 'forward_features gives (1, 120, 768)'),      # its outputs name no grid
    ('vit_base_patch16_radio_v3', 'align_corners=True'),                    # a VisionTransformer the vit family leaves
])
def test_model_outside_supported_families(tmp_path, known_models, model, why):
    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {model}]'), known_models)
    assert_names_file(err, path)
    problem(err, 'models[1]', repr(model), 'in no family the harness supports', why, 'harness coverage')


@pytest.mark.parametrize('entry, where, fragments', [
    ('42', 'models[0]', ('a model name, a mapping with a string "name", or {pattern:', '42')),
    ('{depth: 2}', 'models[0]', ('string "name"',)),
    (f'{{name: {VIT}, label: 3}}', 'models[0].label', ('expected a string', '3')),
])
def test_malformed_model_entries(tmp_path, known_models, entry, where, fragments):
    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{entry}]'), known_models)
    assert_names_file(err, path)
    problem(err, where, *fragments)


def test_constructor_overrides_timm_rejects(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{{name: {VIT}, bogus_arg: 1}}]'), known_models)
    assert_names_file(err, path)
    problem(err, 'models[0]', f'timm cannot build {VIT}', 'bogus_arg')
    # a typo of an axis key inside a model entry reaches timm as an override and is caught the same way
    _, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{{name: {SWIN}, orgins: [timm]}}]'), known_models)
    problem(err, 'models[0]', f'timm cannot build {SWIN}', 'orgins')


def test_unknown_origin(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[timm, nope, file, {name: timm}]'), known_models)
    assert_names_file(err, path)
    problem(err, 'origins[1]', "unknown origin 'nope'", "'big_vision'", '{file: PATH}')
    problem(err, 'origins[2]', "unknown origin 'file'")        # `file` needs a path
    problem(err, 'origins[3]', 'unknown origin')


def test_origin_that_does_not_apply_to_the_family(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[timm, microsoft]'), known_models)
    assert_names_file(err, path)
    problem(err, 'origins[1]', "'microsoft' does not apply to 'vit_tiny_patch16_224'", 'vit family')

    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {SWIN}]')
                         .replace('[timm]', '[timm, big_vision]'), known_models)
    problem(err, 'origins[1]', f"'big_vision' does not apply to '{SWIN}'", 'swin family', "'microsoft'")
    assert len(err.problems) == 1        # it does apply to the ViT

    # a model's own origins are checked against that model, and named by its entry
    _, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {{name: {SWIN}, origins: [timm, dinov2]}}]'),
                      known_models)
    problem(err, 'models[1].origins[1]', f"'dinov2' does not apply to '{SWIN}'")
    assert len(err.problems) == 1


def test_file_origin_problems(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[timm, {file: missing.pth}]'), known_models)
    assert_names_file(err, path)
    problem(err, 'origins[1].file', str(tmp_path / 'missing.pth'), 'does not exist')

    torch.save({'w': torch.ones(2)}, tmp_path / 'there.pth')
    _, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[{file: there.pth, num_classes: -1, extra: 1}]'),
                      known_models)
    problem(err, 'origins[0]', 'unknown keys', "'extra'")
    problem(err, 'origins[0].num_classes', 'expected an int >= 0', '-1')


@pytest.mark.parametrize('models, sizes, patch_sizes, where, fragments', [
    (f'[{VIT}]', '[224, 225]', '[]', 'sizes [225, 225]', (VIT, '225x225', 'multiple of 16x16')),
    (f'[{VIT}]', '[[224, 230]]', '[]', 'sizes [224, 230]', (VIT, 'multiple of 16x16')),
    (f'[{VIT}]', '[232]', '[16, 8]', 'sizes [232, 232]', (VIT, 'patches of 16x16', 'multiple of 16x16')),
    (f'[{SWIN}]', '[224, 114]', '[]', 'sizes [114, 114]', (SWIN, 'patches of 4x4', 'multiple of 4x4')),
])
def test_impossible_sizes(tmp_path, known_models, models, sizes, patch_sizes, where, fragments):
    text = f'name: x\nmodels: {models}\norigins: [timm]\nsizes: {sizes}\npatch_sizes: {patch_sizes}\n'
    path, err = error_of(tmp_path, text, known_models)
    assert_names_file(err, path)
    problem(err, where, *fragments)
    assert len(err.problems) == 1     # 224 fits; for 232 only patch 16 fails, patch 8 fits


def test_possible_sizes_depend_on_patch_size(tmp_path, known_models):
    m = load(tmp_path, f'name: x\nmodels: [{VIT}]\norigins: [timm]\nsizes: [232, [56, 112]]\npatch_sizes: [8]\n',
             known_models)
    assert m.sizes == ((232, 232), (56, 112))


def test_swin_takes_sizes_whose_stage_maps_do_not_tile(tmp_path, known_models):
    """Swin's patch merging pads an odd map and its windows pad to whole windows: 64x72 (stage maps 16x18, 8x9,
    4x5) is a target, judged by the oracles (tests/test_family_swin.py), not refused for its last stride."""
    swin = f'{{name: {SWIN}, embed_dim: 16, depths: [2, 2, 2], num_heads: [1, 2, 2], img_size: 64, window_size: 4}}'
    m = load(tmp_path, f'name: x\nmodels: [{swin}]\norigins: [timm]\nsizes: [[64, 72], 60]\n', known_models)
    assert m.sizes == ((64, 72), (60, 60))


@pytest.mark.parametrize('models, axis, where, fragments', [
    (f'[{VIT}]', 'window_sizes: [7]', 'window_sizes', (VIT, 'window_sizes [7] do not apply', 'the vit family has no '
                                                       'window', 'swin, swin_v2, swin_v2_cr', 'per model entry')),
    (f'[{{name: {VIT}, window_sizes: [[4, 6]]}}]', '', 'models[0].window_sizes',
     ('window_sizes [[4, 6]] do not apply', 'drop models[0].window_sizes')),
    ('[test_resnet]', 'patch_sizes: [8]', 'patch_sizes', ('test_resnet: patch_sizes [8] do not apply',
                                                          'a CNN has no patch embedding', 'cnn family')),
])
def test_an_axis_a_family_cannot_apply_is_an_error_not_dropped(tmp_path, known_models, models, axis, where,
                                                                fragments):
    path, err = error_of(tmp_path, f'name: x\nmodels: {models}\norigins: [timm]\nsizes: [224]\n{axis}\n',
                         known_models)
    assert_names_file(err, path)
    problem(err, where, *fragments)
    assert len(err.problems) == 1


def test_duplicate_models_need_a_label(tmp_path, known_models):
    path, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {SWIN}, {{name: {VIT}, depth: 2}}]'),
                         known_models)
    assert_names_file(err, path)
    problem(err, 'models[2]', f"'{VIT}' is already models[0]", 'distinct `label:`')

    _, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{{name: {VIT}, label: a}}, {{name: {SWIN}, label: a}}]'),
                      known_models)
    problem(err, 'models[1]', "'a' is already models[0]")

    m = load(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {{name: {VIT}, depth: 2, label: d2}}]'), known_models)
    assert [s.label for s in m.models] == [VIT, 'd2']


def test_invalid_yaml(tmp_path, known_models):
    path = write(tmp_path, 'name: x\nmodels: [vit_tiny_patch16_224,\n')
    with pytest.raises(MatrixError) as info:
        load_matrix(path, known_models=known_models)
    assert_names_file(info.value, path)
    assert 'not valid YAML' in str(info.value)


@pytest.mark.parametrize('text, kind', [('- a\n- b\n', 'list'), ('just a string\n', 'str'), ('', 'NoneType')])
def test_non_mapping_top_level(tmp_path, known_models, text, kind):
    path = write(tmp_path, text)
    with pytest.raises(MatrixError) as info:
        load_matrix(path, known_models=known_models)
    assert_names_file(info.value, path)
    assert f'expected a mapping at the top level, got {kind}' in str(info.value)


def test_missing_file(tmp_path, known_models):
    path = tmp_path / 'nowhere.yaml'
    with pytest.raises(MatrixError) as info:
        load_matrix(path, known_models=known_models)
    assert_names_file(info.value, path)
    assert info.value.problems == ['file not found']


def test_all_problems_reported_together(tmp_path, known_models):
    path, err = error_of(tmp_path, f"""\
        name: many
        models: [vit_tiny_patch16_22, mvitv2_tiny, {{name: {VIT}, bogus_arg: 1}}, {SWIN}]
        origins: [timm, openai_clip, nope, {{file: missing.pth}}]
        sizes: [224, big, 114]
        patch_sizes: [0]
        tolerances: {{parity_atol: loose}}
        timing: {{dtype: fp64}}
        expect: [{{match: {{bogus: 1}}, checks: [load], reason: r}}]
        foo: 1
        """, known_models)
    assert_names_file(err, path)
    expected = ['foo', 'models[0]', 'models[1]', 'models[2]', 'origins[1]', 'origins[2]', 'origins[3].file',
                'sizes[1]', 'patch_sizes[0]', 'sizes [114, 114]', 'tolerances.parity_atol', 'timing.dtype',
                'expect[0].match.bogus']
    for where in expected:
        problem(err, where)
    assert len(err.problems) == len(expected)
    assert len(str(err).splitlines()) == 1 + len(expected)


# --- shipped matrices -------------------------------------------------------------------------------------

def test_there_are_shipped_matrices():
    assert SHIPPED, f'no matrices under {REPO / "matrices"}'


@pytest.mark.parametrize('path', SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_matrix_loads(path, known_models):
    sweep = path.name == 'zoo-sweep.yaml'   # a whole release: one shard of it, as each nightly job loads it
    m = load_matrix(path, known_models=known_models, selection=Selection(shard=(5, 64)) if sweep else Selection())
    cases = expand(m)
    assert cases
    ids = [c.case_id for c in cases]
    assert len(set(ids)) == len(ids)
    assert {c.model.label for c in cases} == {s.label for s in m.models}


# --- regressions: bugs found while writing these tests -------------------------------------------------

def test_dict_valued_override_is_accepted(tmp_path, known_models):
    # timm.create_model accepts pretrained_cfg_overlay={...}; the harness rejects it with
    # "timm cannot build ... TypeError: unhashable type: 'dict'"
    m = load(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{{name: {VIT}, pretrained_cfg_overlay: {{num_classes: 1000}}}}]'),
             known_models)
    assert m.models[0].kwargs['pretrained_cfg_overlay'] is not None


def test_case_ids_are_unique_or_duplicates_rejected(tmp_path, known_models):
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        torch.save({'w': torch.ones(2)}, tmp_path / sub / 'ck.pth')
    path = write(tmp_path, f"""\
        name: dup
        models: [{VIT}]
        origins: [timm, timm, {{file: a/ck.pth}}, {{file: b/ck.pth}}]
        sizes: [224, [224, 224]]
        paths: [create]
        """)
    try:
        m = load_matrix(path, known_models=known_models)
    except MatrixError:
        return
    ids = [c.case_id for c in expand(m)]
    assert len(set(ids)) == len(ids), ids


def test_impossible_model_size_names_the_model_entry(tmp_path, known_models):
    _, err = error_of(tmp_path, MINIMAL.replace(f'[{VIT}]', f'[{VIT}, {{name: {VIT}, label: b, sizes: [225]}}]'),
                      known_models)
    assert any(p.startswith('models[1].sizes [225, 225]: b:') for p in err.problems), str(err)


# --- checkpoint files and layouts are vetted before anything runs ----------------------------------------

def _truncated(path: Path) -> None:
    torch.save({'w': torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])


class _WritesMarker:
    """A pickle payload that would create a file when unpickled unsafely."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize('name, make, fragment', [
    ('empty.pth', lambda p: p.write_bytes(b''), 'is empty'),
    ('truncated.pth', _truncated, 'not a readable PyTorch checkpoint'),
    ('notes.pth', lambda p: p.write_text('these are not weights\n'), 'not a readable PyTorch checkpoint'),
    ('picture.safetensors', lambda p: p.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64)), 'not a readable safetensors'),
    ('weights.npz', lambda p: p.write_bytes(b'PK\x03\x04 not really'), 'not a readable .npz'),
    ('nothing.pth', lambda p: torch.save({'epoch': 3}, p), 'holds no tensors'),
])
def test_bad_checkpoint_files_are_refused_before_any_case_runs(tmp_path, known_models, name, make, fragment):
    make(tmp_path / name)
    _, err = error_of(tmp_path, MINIMAL.replace('[timm]', f'[{{file: {name}}}]'), known_models)
    problem(err, 'origins[0].file', str(tmp_path / name), fragment)


def test_a_checkpoint_that_would_run_code_is_refused_and_never_run(tmp_path, known_models):
    marker = tmp_path / 'ran'
    torch.save({'pos_embed': torch.zeros(1, 2, 3), 'payload': _WritesMarker(marker)}, tmp_path / 'evil.pth')
    _, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[{file: evil.pth}]'), known_models)
    problem(err, 'origins[0].file', 'refused', 'run no code')
    assert not marker.exists()


def test_a_layout_that_cannot_hold_the_model_is_a_matrix_error(tmp_path, known_models):
    """OpenAI CLIP has no patch-embedding bias and always a pre-norm: a plain ViT does not fit it."""
    _, err = error_of(tmp_path, MINIMAL.replace('[timm]', '[timm, openai_clip]'), known_models)
    problem(err, 'origins[1]', f'the openai_clip layout does not fit {VIT}', 'patch_embed.proj.bias')
    assert len(err.problems) == 1


# --- rectangular windows and model patterns -------------------------------------------------------------------

def test_rectangular_windows_in_case_ids_results_and_expect(tmp_path, known_models):
    m = load(tmp_path, f'''
        name: w
        models: [{SWIN}]
        origins: [timm]
        sizes: [[256, 384]]
        window_sizes: [8, [8, 12], [7, 7]]
        paths: [create]
        expect:
          - {{match: {{window_size: [8, 12]}}, checks: [parity], reason: rectangular}}
        ''', known_models)
    assert m.window_sizes == (8, (8, 12), 7)   # [7, 7] is the square window 7: one spelling per window
    cases = {c.window_size: c for c in expand(m)}
    assert cases[(8, 12)].case_id == f'{SWIN}-timm-256x384-window8x12-create'
    assert cases[7].case_id == f'{SWIN}-timm-256x384-window7-create'
    assert expectation_for(cases[(8, 12)], m, timm.__version__).reason == 'rectangular'
    assert expectation_for(cases[8], m, timm.__version__) is None


def test_a_window_that_is_not_a_size_is_a_matrix_error(tmp_path, known_models):
    _, err = error_of(tmp_path, f'name: w\nmodels: [{SWIN}]\norigins: [timm]\nsizes: [224]\nwindow_sizes: [[8, 0]]\n',
                      known_models)
    problem(err, 'window_sizes[0]', 'expected a positive int (square) or [H, W]', '[8, 0]')


def test_a_pattern_expands_to_every_matching_model_with_shared_overrides(tmp_path, known_models):
    m = load(tmp_path, '''
        name: p
        models:
          - {pattern: "deit_*_patch16_224", depth: 1, sizes: [[224, 448]]}
        origins: [timm]
        sizes: [224]
        ''', known_models)
    names = [model.name for model in m.models]
    assert names == sorted(n for n in known_models if __import__('fnmatch').fnmatch(n, 'deit_*_patch16_224'))
    assert len(names) >= 3 and all(dict(model.overrides) == {'depth': 1} for model in m.models)
    assert all(dict(model.axes) == {'sizes': ((224, 448),)} for model in m.models)


@pytest.mark.parametrize('models, where, fragments', [
    ('[{pattern: "no_such_model_*"}]', 'models[0].pattern', ("'no_such_model_*' matches no timm model",)),
    (f'[{{pattern: "vit_tiny_patch16_2*"}}, {VIT}]', f'models[0] ({VIT})',
     (f"'{VIT}' is already models[1]", 'narrow the pattern')),
    ('[{pattern: "vit_tiny_patch16_22*", label: t}]', 'models[0].label', ('drop `label:`',)),
])
def test_pattern_problems(tmp_path, known_models, models, where, fragments):
    _, err = error_of(tmp_path, f'name: p\nmodels: {models}\norigins: [timm]\nsizes: [224]\n', known_models)
    problem(err, where, *fragments)


def test_expect_entries_name_models_of_the_matrix_by_timm_name_or_label(tmp_path, known_models):
    text = f'''
        name: e
        models: [{VIT}, {{name: {VIT}, label: wide, img_size: [224, 448]}}]
        origins: [timm]
        sizes: [224]
        expect:
          - {{match: {{label: wide}}, checks: [fidelity], reason: only the wide one}}
          - {{match: {{model: {VIT}, path: dynamic}}, checks: [parity], reason: both}}
        '''
    m = load(tmp_path, text, known_models)
    by_label = {}
    for case in expand(m):
        by_label.setdefault(case.model.label, []).append(case)
    create = {label: next(c for c in cases if c.path == 'create') for label, cases in by_label.items()}
    assert expectation_for(create['wide'], m, timm.__version__).reason == 'only the wide one'
    assert expectation_for(create[VIT], m, timm.__version__) is None
    _, err = error_of(tmp_path, text.replace('{label: wide}', '{model: wide}'), known_models)
    problem(err, 'expect[0].match.model', "'wide' is no timm model of this matrix", 'match it with `label:`')
    _, err = error_of(tmp_path, text.replace('{label: wide}', '{label: narrow}'), known_models)
    problem(err, 'expect[0].match.label', "'narrow' is no label of this matrix", "'wide'")


# --- bounds that need a model (harness.spec.limits): estimated forward memory, cases, what errors quote ---------------

TINY_VIT = '{name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2}'
TINY_SWIN = '{name: swin_tiny_patch4_window7_224, embed_dim: 32, depths: [1, 1, 1, 1], num_heads: [1, 1, 1, 1]}'


@pytest.mark.parametrize('model, size, num_images, gib', [
    (TINY_VIT, 4096, 4, 64.0),    # 65,536 patches, each attending to all: 4 B x 4 x 65,536 x (32 + 65,536)
    (TINY_VIT, 2048, 32, 32.1),   # 16,384 patches: 4.0 GiB for 4 images, too much for 32
])
def test_a_case_estimated_to_need_more_memory_than_the_budget_is_refused(tmp_path, known_models, model, size,
                                                                        num_images, gib):
    """100000x100000 passed 8 GB in 45 s before any check; a size within MAX_SIDE can still need terabytes."""
    from harness.spec.limits import FORWARD_MEMORY_BUDGET
    text = f'name: m\nmodels: [{model}]\norigins: [timm]\nsizes: [{size}]\nnum_images: {num_images}\n'
    path, err = error_of(tmp_path, text, known_models)
    line = problem(err, f'sizes [{size}, {size}]', f'is estimated to need {gib} GiB', 'FORWARD_MEMORY_BUDGET')
    assert f'the budget is {FORWARD_MEMORY_BUDGET / 2 ** 30:.1f} GiB' in line and f'{num_images} images' in line


@pytest.mark.parametrize('model, size, num_images', [
    (TINY_VIT, 2048, 4),    # 4.0 GiB
    (TINY_SWIN, 4096, 4),   # windowed attention: 1,048,576 patches attend to 49 each, 2.8 GiB
])
def test_a_case_within_the_memory_budget_loads(tmp_path, known_models, model, size, num_images):
    text = f'name: m\nmodels: [{model}]\norigins: [timm]\nsizes: [{size}]\nnum_images: {num_images}\n'
    assert load(tmp_path, text, known_models).sizes == ((size, size),)


def test_the_number_of_cases_is_bounded(tmp_path, known_models, monkeypatch):
    """Counted before the cases are held: 6 cases load under a limit of 6 and are refused under 5."""
    import harness.spec.matrix
    text = MINIMAL.replace('sizes: [224]', 'sizes: [224, 448]')   # 2 sizes x 3 paths
    monkeypatch.setattr(harness.spec.matrix, 'MAX_CASES', 6)
    assert len(expand(load(tmp_path, text, known_models))) == 6
    monkeypatch.setattr(harness.spec.matrix, 'MAX_CASES', 5)
    _, err = error_of(tmp_path, text, known_models)
    problem(err, 'cases', 'more than 5 cases', 'the limit is 5 (MAX_CASES)')


def test_errors_quote_a_short_prefix_and_list_a_bounded_number_of_problems(tmp_path, known_models):
    from harness.spec.limits import MAX_PROBLEMS_SHOWN, QUOTE_CHARS
    _, err = error_of(tmp_path, MINIMAL + f'timing: {{dtype: {"f" * 4000}}}\n', known_models)
    assert len(problem(err, 'timing.dtype', f"{'f' * QUOTE_CHARS!r}... (4000 characters)")) < 200
    forty_bad_sizes = 'sizes: [' + ', '.join(['-1'] * 40) + ']'
    _, err = error_of(tmp_path, MINIMAL.replace('sizes: [224]', forty_bad_sizes), known_models)
    assert len(err.problems) == 40
    lines = str(err).splitlines()
    assert len(lines) == 1 + MAX_PROBLEMS_SHOWN + 1 and lines[-1] == f'  - ... and {40 - MAX_PROBLEMS_SHOWN} more'
