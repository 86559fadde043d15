"""The zoo sweep (harness.spec.zoo, ``{zoo: GLOB}`` entries, ``harness run --zoo``): which architectures run, how they
are shrunk, and how a shard builds only its own. Models are built on the meta device except in the one run."""
from __future__ import annotations

import json
import textwrap

import pytest
import timm
import yaml

from harness.families import family_of
from harness.families.base import native_geometry
from harness.spec.cases import expand, in_shard
from harness.spec.matrix import MatrixError, ModelSpec, Selection, load_matrix
from harness.spec.zoo import miniature_problem, parameter_count, resize_facts, zoo_choice
from tests.test_cli import harness, records
from tests.test_inputs import one_error_line


@pytest.fixture(scope='module')
def known_models() -> list[str]:
    return timm.list_models()


def zoo(tmp_path, entries: str, extra: str = '', name: str = 'zoo.yaml', origins: str = '[timm]'):
    path = tmp_path / name
    path.write_text(textwrap.dedent(f'name: z\nmodels:\n{entries}\norigins: {origins}\n{extra}'))
    return path


@pytest.mark.parametrize('name', ['vit_base_patch16_224', 'eva02_base_patch14_224', 'beit_base_patch16_224',
                                  'swin_base_patch4_window7_224', 'swinv2_cr_tiny_ns_224', 'efficientvit_m5',
                                  'maxvit_tiny_tf_224', 'vit_base_r50_s16_384', 'naflexvit_base_patch16_gap'])
def test_a_miniature_keeps_everything_resizing_reads_and_is_smaller(name):
    choice = zoo_choice(name)
    assert choice.overrides and not choice.left_out, choice
    family, real, small = family_of(name), ModelSpec(name), ModelSpec.of(name, choice.overrides)
    assert family_of(small) is family
    assert resize_facts(native_geometry(family, small)) == resize_facts(native_geometry(family, real))
    assert parameter_count(small) * 4 < parameter_count(real)   # a hybrid keeps its CNN stem (12M of 99M)


@pytest.mark.parametrize('name, overrides, changed', [
    ('vit_base_patch16_224', {'depth': 1, 'patch_size': 32}, ('grid_size', 'patch_size')),     # a new patch
    ('vit_base_patch16_224', {'depth': 1, 'class_token': False, 'global_pool': 'avg'},
     ('num_prefix_tokens', 'pos_prefix_tokens')),                                            # a token dropped
    ('swin_base_patch4_window7_224', {'embed_dim': 32, 'depths': (2, 2, 2), 'num_heads': (2, 2, 2)},
     ('shift_sizes', 'window_config', 'window_sizes')),                                         # a stage dropped
    ('swin_base_patch4_window7_224', {'window_size': 8}, ('shift_sizes', 'window_config', 'window_sizes')),
])
def test_a_miniature_that_changes_what_resizing_reads_is_refused(name, overrides, changed):
    """The mutants of a family's miniatures: each would let the sweep test another geometry than the real one."""
    problem = miniature_problem(family_of(name), ModelSpec(name), overrides)
    assert problem is not None
    named = set(problem.removeprefix('changes ').split(', '))
    assert set(changed) <= named, problem


def test_what_runs_at_its_real_configuration_and_what_is_left_out():
    resnet = zoo_choice('resnet18')   # the cnn family does not shrink: small enough to run as it is
    assert resnet.overrides == {} and 'real configuration' in resnet.note and 'does not shrink' in resnet.note
    sapiens = zoo_choice('vit_base_patch16_sapiens2')   # per-block head counts: no miniature builds; 114M
    assert sapiens.overrides == {} and 'num_kv_heads' in sapiens.note and '114.' in sapiens.note
    largest = zoo_choice('convnext_xxlarge')   # no miniature and 846M parameters
    assert largest.overrides is None
    assert all(part in largest.left_out for part in ('846M parameters', 'does not shrink', '--full-size runs it'))
    assert zoo_choice('convnext_xxlarge', full_size=True).overrides == {}
    mixer = zoo_choice('mixer_s16_224')   # fixed size: runs, its cases unsupported with the reason
    assert mixer.overrides == {} and 'only its own input size' in mixer.note
    assert zoo_choice('vit_base_patch16_224', full_size=True).overrides == {}


def test_a_zoo_entry_expands_each_architecture_by_its_family(tmp_path, known_models):
    matrix = load_matrix(zoo(tmp_path, "  - {zoo: 'swinv2_cr_tiny_ns_224'}\n  - {zoo: resnet18}\n"
                                       "  - {zoo: mixer_s16_224}\n  - {zoo: convnext_xxlarge}"), known_models)
    by_label = {m.label: m for m in matrix.models}
    assert by_label['swinv2_cr_tiny_ns_224'].kwargs == zoo_choice('swinv2_cr_tiny_ns_224').overrides
    assert 'swinv2_cr_tiny_ns_224-src224x352' in by_label   # its trigger set's rectangular source
    assert all(m.zoo for m in matrix.models)
    cases = {c.case_id: c for c in expand(matrix)}
    assert {c.path for c in cases.values() if c.model.name == 'resnet18'} == {'create'}
    assert {c.path for c in cases.values() if c.model.name == 'swinv2_cr_tiny_ns_224'} == \
        {'create', 'set_input_size', 'dynamic'}
    assert 'mixer_s16_224-timm-224x336-create' in cases
    assert [line for line in matrix.left_out if 'convnext_xxlarge' in line and '846M parameters' in line]


def test_a_zoo_entry_takes_only_its_glob(tmp_path, known_models):
    with pytest.raises(MatrixError) as err:
        load_matrix(zoo(tmp_path, "  - {zoo: 'vit_base*', depth: 1}", 'sizes: [96]\n'), known_models)
    assert [p for p in err.value.problems if p.startswith('models[0].depth: a zoo entry takes only `zoo: GLOB`')]
    with pytest.raises(MatrixError) as err:
        load_matrix(zoo(tmp_path, "  - {zoo: 'no_such_model*'}"), known_models)
    assert [p for p in err.value.problems if p.startswith("models[0].zoo: 'no_such_model*' matches no timm model")]


def test_a_shard_builds_only_its_own_architectures(tmp_path, known_models):
    path = zoo(tmp_path, "  - {zoo: 'efficientvit_m*'}\n"
                         "  - {name: vit_tiny_patch16_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 64}",
               'sizes: [96]\n')
    whole = load_matrix(path, known_models)
    shards = [load_matrix(path, known_models, Selection(shard=(k, 3))) for k in (1, 2, 3)]
    zoo_names = [sorted({m.name for m in shard.models if m.zoo}) for shard in shards]
    assert sorted(sum(zoo_names, [])) == sorted({m.name for m in whole.models if m.zoo})   # dealt, none twice
    assert all(len(names) == 2 for names in zoo_names)   # six architectures, two each
    # the named entry is in every shard's matrix; its one checkpoint is dealt to one shard's cases
    kept = [[c for c in in_shard(expand(shard), shard.selection) if not c.model.zoo] for shard in shards]
    assert sorted(map(len, kept)) == [0, 0, 3]
    ids = [c.case_id for shard in shards for c in in_shard(expand(shard), shard.selection)]
    assert sorted(ids) == sorted(c.case_id for c in expand(whole))


def test_harness_run_zoo_writes_its_matrix_records_the_size_and_refuses_mixed_merges(tmp_path, cache_dir):
    first, second = tmp_path / 'one', tmp_path / 'two'
    done = harness('run', '--zoo', 'efficientvit_m0', '--shard', '1/2', '--no-timing', '-k', 'create',
                   '--out', first, '--cache', cache_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = yaml.safe_load((first / 'zoo-efficientvit_m0.yaml').read_text())
    assert written['models'] == [{'zoo': 'efficientvit_m0'}]
    assert records(first) and {r['status'] for r in records(first)} == {'passed'}
    assert all(r['model_overrides']['embed_dim'] == [32, 48, 64] for r in records(first))   # its miniature
    assert json.loads((first / 'run.json').read_text())['full_size'] is False
    empty = harness('run', '--zoo', 'efficientvit_m0', '--shard', '2/2', '--no-timing', '--full-size',
                    '--out', second, '--cache', cache_dir)   # one architecture: shard 2 of 2 holds none
    assert empty.returncode == 0, empty.stdout[-3000:] + empty.stderr[-3000:]
    assert json.loads((second / 'run.json').read_text())['full_size'] is True
    mixed = harness('merge', tmp_path / 'merged', first, second)
    assert 'zoo models at full size (--full-size) was False, now True' in one_error_line(mixed)


def test_zoo_is_one_way_to_name_the_cases(tmp_path):
    line = one_error_line(harness('run', '--zoo', 'vit*', '--model', 'resnet18', '--out', tmp_path))
    assert '--zoo: expected one of a MATRIX file, --model or --zoo' in line


@pytest.mark.parametrize('zoo_model, overrides, kept', [(True, (), False), (True, (('depth', 1),), True),
                                                         (False, (), True)])
def test_only_a_zoo_checkpoint_at_its_real_configuration_is_discarded_after_its_cases(tmp_path, zoo_model,
                                                                                      overrides, kept):
    from harness.checkpoints.store import Checkpoint, discard_if_disposable
    entry = tmp_path / 'resnet18-timm-0123'
    entry.mkdir()
    (entry / 'reference.safetensors').write_bytes(b'x')
    model = ModelSpec('resnet18', overrides, zoo=zoo_model)
    discard_if_disposable(Checkpoint(model, 'timm', entry / 'model.safetensors', None, False, 'bicubic', True,
                                     reference_file=entry / 'reference.safetensors'))
    assert entry.exists() == kept


def test_a_trigger_variant_keeps_only_the_origins_whose_layout_holds_it(tmp_path, known_models):
    """OpenAI CLIP records one square input resolution: the rectangular source variant of a CLIP ViT is left out of
    that origin (it was an `error` case on every path before), and kept for the others."""
    matrix = load_matrix(zoo(tmp_path, "  - {zoo: vit_betwixt_patch32_clip_224}",
                             origins='[timm, openai_clip, open_clip]'), known_models)
    by_label = {m.label: {o.name for o in dict(m.axes)['origins']} for m in matrix.models}
    assert by_label['vit_betwixt_patch32_clip_224'] == {'timm', 'openai_clip', 'open_clip'}
    assert by_label['vit_betwixt_patch32_clip_224-src224x352'] == {'timm', 'open_clip'}
    assert [line for line in matrix.left_out if 'src224x352' in line and 'square input_resolution' in line]


def test_only_a_token_grid_table_is_smoothed_into_a_trained_looking_pos_embed():
    """HieraDet keeps an NCHW pos_embed and no patch grid: synthesis leaves it as initialised (it raised before)."""
    import torch

    from harness.checkpoints.synthesize import _token_grid_table
    assert _token_grid_table(torch.zeros(1, 1 + 14 * 14, 8), (14, 14))
    assert not _token_grid_table(torch.zeros(1, 8, 14, 14), (14, 14))
    assert not _token_grid_table(torch.zeros(1, 197, 8), None)
