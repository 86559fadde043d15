"""harness repro: failed cases as standalone scripts, made from real records and run against real timm releases.

The releases' own failures (0.9.16 cannot load CLIP layouts at patch 8; 0.9.16 and 1.0.30 resample a
rectangular source position embedding wrongly) come from one recording under 0.9.16, shared by the tests that
need it; scripts for old releases run in one subprocess per release that imports only that timm (so a script
that leaned on the harness would fail there), scripts for the installed release run in this process. Oracles
without a failing release pair (parity, Swin tables) are proven against a deliberately broken timm.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import io
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.analysis.report import write_report
from harness.repro import snippets
from harness.results import RESULTS_FILE, append_result
from harness.store.case_result import CaseResult
from harness.store.run_record import RunRecord, write_run_record
from harness.timm_versions import installed_release
from tests.conftest import REPO
from tests.record_cases import record

ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {'torch', 'timm', 'numpy', 'safetensors'}

OLD_RELEASE_CASES = '''
name: repro-old
models:
  - {name: vit_base_patch16_clip_224, embed_dim: 64, depth: 2, num_heads: 2, origins: [open_clip], sizes: [224],
     patch_sizes: [8], paths: [create]}
  - {name: vit_tiny_patch16_224, depth: 2, img_size: [128, 256], origins: [timm], sizes: [[64, 512]],
     paths: [create, set_input_size]}
'''
CLIP_CASE = 'vit_base_patch16_clip_224-open_clip-224x224-patch8-create'
RECTANGULAR_CASE = 'vit_tiny_patch16_224-timm-64x512-create'

SMALL_VIT = '''
models: [{name: vit_tiny_patch16_224, depth: 1, img_size: 32}]
origins: [timm]
sizes: [48]
num_images: 2
'''
# drift is record-only by default; a matrix that asks for a near-perfect cosine makes it fail for real
STRICT_DRIFT = SMALL_VIT + 'name: repro-drift\npaths: [set_input_size]\ntolerances: {drift_min_cosine: 0.999999}\n'
DRIFT_CASE = 'vit_tiny_patch16_224-timm-48x48-set_input_size'
PARITY = SMALL_VIT + 'name: repro-parity\npaths: [create, set_input_size]\n'

SWIN = '''
name: repro-swin
models: [{name: swin_tiny_patch4_window7_224, embed_dim: 16, depths: [1, 1, 2, 1], num_heads: [1, 1, 1, 1],
          img_size: 64}]
origins: [timm]
sizes: [[64, 96]]
paths: [create]
num_images: 2
'''

RUNNER = '''
import runpy, sys
for path in sys.argv[1:]:
    print(f'== {path}', flush=True)
    try:
        runpy.run_path(path, run_name='__main__')
    except SystemExit as e:
        print(f'== exit {e.code}', flush=True)
'''


# --- helpers --------------------------------------------------------------------------------------------------
def repro(run_dir: Path, case_id: str, out: Path) -> str:
    """``harness repro`` in this process; the script's text."""
    assert cli.main(['repro', str(run_dir), case_id, '--out', str(out)]) == 0
    script = out.read_text()
    assert_standalone(script)
    return script


def words(text: str) -> str:
    """``text`` with its line breaks (wrapped paragraphs) as spaces."""
    return ' '.join(text.split())


def assert_standalone(script: str) -> None:
    """Every import of the script, wherever it is, is of torch, timm, numpy, safetensors or the standard library;
    its lines are as wide as the code base's."""
    modules = set()
    for node in ast.walk(ast.parse(script)):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module.split('.')[0])
    assert modules and modules <= ALLOWED_IMPORTS, modules - ALLOWED_IMPORTS
    assert max(map(len, script.splitlines())) <= 120


def run_here(script: Path) -> tuple[int, str]:
    """The script run in this process, against the installed timm: its exit code and what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name='__main__')
    return exited.value.code, printed.getvalue()


def run_on_release(release_dir: Path, scripts: list[Path]) -> dict[Path, tuple[int, str]]:
    """Scripts run one after another in one subprocess that imports timm from ``release_dir`` and nothing of the
    harness: each script's exit code and what it printed."""
    done = subprocess.run([sys.executable, '-c', RUNNER, *map(str, scripts)], capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(release_dir)}, cwd=release_dir)
    outcomes = {Path(found[1]): (int(found[3]), found[2])
                for found in re.finditer(r'^== ([^\n]+)\n(.*?)^== exit (\d+)$', done.stdout, re.S | re.M)}
    assert set(outcomes) == set(scripts), done.stdout[-3000:] + done.stderr[-3000:]
    return outcomes


@pytest.fixture(scope='module')
def old_run(tmp_path_factory, release_cache) -> Path:
    """The old-release cases recorded under timm 0.9.16: CLIP patch 8 fails load, the rectangular create case
    fidelity, its set_input_size case is unsupported."""
    folder = tmp_path_factory.mktemp('repro-old')
    (folder / 'matrix.yaml').write_text(OLD_RELEASE_CASES)
    site = installed_release('0.9.16', release_cache)
    done = subprocess.run([sys.executable, '-m', 'tests.record_cases', str(folder / 'matrix.yaml'), str(folder / 'run'),
                           str(release_cache)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(site), str(REPO)])})
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / 'run'


@pytest.fixture(scope='module')
def scripts(old_run, tmp_path_factory, cache_dir) -> dict[str, Path]:
    """The reproducers of the old run's failures, and of a set_input_size case failing a strict drift tolerance on
    the installed timm."""
    folder = tmp_path_factory.mktemp('repro-scripts')
    (folder / 'drift.yaml').write_text(STRICT_DRIFT)
    record(folder / 'drift.yaml', folder / 'drift', cache_dir)
    made = {case: folder / f'{case}.py' for case in (CLIP_CASE, RECTANGULAR_CASE, DRIFT_CASE)}
    for case, script in made.items():
        repro(folder / 'drift' if case == DRIFT_CASE else old_run, case, script)
    return made


@pytest.fixture(scope='module')
def on_0_9_16(scripts, release_cache) -> dict[Path, tuple[int, str]]:
    return run_on_release(installed_release('0.9.16', release_cache), list(scripts.values()))


# --- real releases -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_clip_patch8_load_failure_reproduces_on_0_9_16_and_passes_on_the_current_release(scripts, on_0_9_16):
    script = scripts[CLIP_CASE]
    code, printed = on_0_9_16[script]
    assert code == 1 and 'REPRODUCED: load fails' in printed and 'patch_embed.proj.weight' in printed, printed
    code, printed = run_here(script)
    assert code == 0 and 'PASSED' in printed, printed
    text = script.read_text()
    assert 'Releases: timm failed on 0.9.16 (results.jsonl).' in text and 'write_open_clip' in text
    assert len(text.splitlines()) <= 150


@pytest.mark.slow
def test_the_rectangular_fidelity_failure_reproduces_on_1_0_30_and_passes_on_the_current_release(
        scripts, on_0_9_16, release_cache):
    script = scripts[RECTANGULAR_CASE]
    for code, printed in (on_0_9_16[script], run_on_release(installed_release('1.0.30', release_cache),
                                                            [script])[script]):
        assert code == 1 and 'REPRODUCED: fidelity fails' in printed and 'in pos_embed' in printed, printed
    code, printed = run_here(script)
    assert code == 0 and 'fidelity: ok' in printed, printed
    text = script.read_text()
    assert "resample_pos_embed(reference['pos_embed'], (8, 16), (4, 32), 1, 'bicubic', True)" in text
    assert len(text.splitlines()) <= 180   # 15 of them the harness's position-embedding oracle, as it is


@pytest.mark.slow
def test_a_path_the_release_lacks_exits_125_and_the_matrix_tolerance_is_the_one_judged(scripts, on_0_9_16):
    script = scripts[DRIFT_CASE]
    code, printed = on_0_9_16[script]
    assert code == 125 and 'has no set_input_size in timm 0.9.16' in printed, printed
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: drift fails' in printed, printed
    assert 'min_cos=0.999999' in script.read_text()


@pytest.mark.slow
def test_only_failed_and_xfailed_cases_get_a_script(old_run, tmp_path, capsys):
    unsupported = 'vit_tiny_patch16_224-timm-64x512-set_input_size'
    assert cli.main(['repro', str(old_run), unsupported, '--out', str(tmp_path / 'x.py')]) == 2
    assert f'{unsupported} is unsupported' in capsys.readouterr().err and not (tmp_path / 'x.py').exists()
    write_report(old_run / RESULTS_FILE, tmp_path)
    report = (tmp_path / 'report.md').read_text()
    assert f'harness repro {old_run} {CLIP_CASE}' in report and f'{old_run} {unsupported}' not in report


# --- oracles proven against a broken timm (no release pair fails them) -----------------------------------------
def _loose_norms_after_resizing(monkeypatch):
    """A ViT whose set_input_size, when the size changes, also loosens its first norms (an epsilon outside the state
    dict): every stored tensor is right (fidelity holds), the outputs are not the create path's (parity fails)."""
    from timm.models.vision_transformer import VisionTransformer
    original = VisionTransformer.set_input_size

    @functools.wraps(original)
    def set_input_size(self, img_size=None, **kwargs):
        changed = img_size is not None and tuple(img_size) != tuple(self.patch_embed.img_size)
        original(self, img_size=img_size, **kwargs)
        for block in self.blocks if changed else ():
            block.norm1.eps = 0.5
    monkeypatch.setattr(VisionTransformer, 'set_input_size', set_input_size)


def test_a_parity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    with monkeypatch.context() as broken:
        _loose_norms_after_resizing(broken)
        results = run_matrix(PARITY)
        case = next(r for r in results.values() if r.path == 'set_input_size')
        assert case.status == 'failed' and case.failed_checks == ['parity'], case.reason
        script = tmp_path / 'parity.py'
        repro(_recorded(tmp_path / 'run', case), case.case_id, script)
        code, printed = run_here(script)
        assert code == 1 and 'REPRODUCED: parity fails' in printed, printed
    code, printed = run_here(script)
    assert code == 0 and 'parity: ok' in printed, printed


def test_a_swin_table_fidelity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    """Also: with the family's fidelity snippet gone, the script says it cannot tell, where it would pass."""
    from timm.models import swin_transformer
    resize = swin_transformer.resize_rel_pos_bias_table
    with monkeypatch.context() as broken:
        broken.setattr(swin_transformer, 'resize_rel_pos_bias_table', lambda *a, **k: resize(*a, **k) * 1.01)
        case = next(iter(run_matrix(SWIN.replace('PATHS', 'create')).values()))
        assert case.status == 'failed' and case.failed_checks == ['fidelity'], case.reason
        run_dir = _recorded(tmp_path / 'run', case)
        script, blind = tmp_path / 'fidelity.py', tmp_path / 'blind.py'
        text = repro(run_dir, case.case_id, script)
        with monkeypatch.context() as no_snippet:
            no_snippet.delitem(snippets.SNIPPETS, ('swin', 'fidelity'))
            assert 'Not inlined: the fidelity oracle of the swin family' in words(repro(run_dir, case.case_id, blind))
        code, printed = run_here(script)
        assert code == 1 and 'REPRODUCED: fidelity fails' in printed and 'relative_position_bias_table' in printed
    code, printed = run_here(script)
    assert code == 0 and 'fidelity: ok' in printed, printed
    code, printed = run_here(blind)
    assert code == 125 and 'not inlined' in printed, printed
    assert 'windows = {2: ((4, 4), (4, 6)), 3: ((2, 2), (2, 3))}   # stage: (old window, new window)' in text
    assert len(text.splitlines()) <= 230   # 60 of them the harness's table oracle (BEiT's resampling, flat tables too)


# --- each family's fidelity oracle in a script: a failing case exits 1, a passing one 0 --------------------------
def tiny_matrix(model: str, size: str, paths: str, origin: str = 'timm') -> str:
    """A one-model matrix: ``model`` (a flow mapping's inside), one target ``size``, ``paths``."""
    return (f'name: repro-family\nmodels: [{{{model}}}]\norigins: [{origin}]\nsizes: [{size}]\npaths: [{paths}]\n'
            'num_images: 2\n')


def _family_scripts(run_matrix, tmp_path: Path, matrix: str) -> dict[str, tuple[CaseResult, Path]]:
    """Every case of ``matrix`` run in this process (with timm as the caller has it), and for each failed one its
    script, written from the run's record, by path."""
    made = {}
    for case in run_matrix(matrix).values():
        if case.status == 'failed':
            script = tmp_path / f'{case.path}.py'
            repro(_recorded(tmp_path / case.path, case), case.case_id, script)
            made[case.path] = case, script
    return made


def _scaled(function, factor: float = 1.01):
    """``function`` with its result scaled: a resize that gets every value slightly wrong."""
    @functools.wraps(function)
    def scaled(*args, **kwargs):
        return function(*args, **kwargs) * factor
    return scaled


def assert_reproduces(script: Path, tensor: str) -> None:
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: fidelity fails' in printed and tensor in printed, printed


def assert_passes(script: Path) -> None:
    code, printed = run_here(script)
    assert code == 0 and 'fidelity: ok' in printed and 'FAILED' not in printed, printed


def fails_then_passes(run_matrix, tmp_path: Path, monkeypatch, matrix: str, breaks, says: str | dict[str, str]
                      ) -> dict[str, str]:
    """The cases of ``matrix`` run on a timm ``breaks(monkeypatch)`` broke: every path fails fidelity and its
    script reproduces that, saying ``says`` (a tensor's name; per path, a dict); with timm as it was, every script
    passes. The scripts' text, by path."""
    with monkeypatch.context() as broken:
        breaks(broken)
        scripts = _family_scripts(run_matrix, tmp_path, matrix)
        assert {path: case.failed_checks for path, (case, _) in scripts.items()} == {
            path: ['fidelity'] for path in re.search(r'paths: \[(.*)\]', matrix).group(1).split(', ')}
        for path, (_, script) in scripts.items():
            assert_reproduces(script, says[path] if isinstance(says, dict) else says)
    for _, script in scripts.values():
        assert_passes(script)
    return {path: script.read_text() for path, (_, script) in scripts.items()}


@pytest.mark.parametrize('model', ['name: beit_base_patch16_224',
                                   'name: vit_relpos_base_patch16_clsgap_224, rel_pos_type: bias'])
def test_a_transposed_grid_table_loaded_unchanged_at_create_reproduces_on_the_current_release(model, run_matrix,
                                                                                             tmp_path, monkeypatch):
    """timm 1.0.31 loads a 4x6 grid's table into a 6x4 model unchanged at create (matrices/zoo-relpos.yaml):
    the script fails on it as it is. set_input_size resizes right; made to fail by a mutant, its script passes
    once the mutant is gone."""
    from timm.layers import pos_embed_rel
    with monkeypatch.context() as broken:
        for module in ('beit', 'vision_transformer_relpos'):
            broken.setattr(f'timm.models.{module}.resize_rel_pos_bias_table',
                           _scaled(pos_embed_rel.resize_rel_pos_bias_table))
        scripts = _family_scripts(run_matrix, tmp_path, tiny_matrix(
            f'{model}, embed_dim: 32, depth: 1, num_heads: 2, img_size: [64, 96]', '[96, 64]',
            'create, set_input_size'))
    assert set(scripts) == {'create', 'set_input_size'}
    assert_reproduces(scripts['create'][1], 'relative_position_bias_table')
    assert_passes(scripts['set_input_size'][1])
    text = scripts['create'][1].read_text()
    assert 'windows = {' in text and '((4, 6), (6, 4))' in text and 'expected_attention_biases(' in text


def test_a_maxvit_table_fidelity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    """The TensorFlow MaxViT's per-head tables resized 1% off to the 3x4 partitions of 96x128, on both paths."""
    from timm.layers import pos_embed_rel
    resize = _scaled(pos_embed_rel.resize_rel_pos_bias_table)

    def breaks(broken):
        broken.setattr(pos_embed_rel, 'resize_rel_pos_bias_table', resize)
        broken.setattr('timm.models.maxxvit.resize_rel_pos_bias_table', resize)
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(
        'name: maxvit_tiny_tf_224, embed_dim: [32, 64, 64, 64], depths: [1, 1, 1, 1], stem_width: 16, '
        'head_hidden_size: 64, img_size: 96', '[96, 128]', 'create, set_input_size'), breaks,
        'relative_position_bias_table')
    assert "RelPosModule('stages.0.blocks.0.attn_block.attn.rel_pos', 'per_head_table', (3, 3))" in texts['create']


def test_an_eva_rope_fidelity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    """A rotary embedding off by 1% on every path: create's derived rope, dynamic's returned rope and logits."""
    from timm.layers import RotaryEmbeddingCat
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(
        'name: eva02_tiny_patch14_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: [56, 84]', '[84, 56]',
        'create, dynamic'), lambda broken: broken.setattr(RotaryEmbeddingCat, 'get_embed',
                                                          _scaled(RotaryEmbeddingCat.get_embed)),
        {'create': 'in rope.embedding', 'dynamic': 'logits within'})
    assert 'config = RopeConfig(kind=' in texts['create'] and 'with_reference_rope(built, ' in texts['dynamic']


NAFLEXVIT = 'name: naflexvit_base_patch16_gap, embed_dim: 32, depth: 1, num_heads: 2, img_size: [64, 128], ' \
            'pos_embed_grid_size: [4, 8]'


def test_a_naflexvit_table_fidelity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    """A position table added 0.01 off at every grid (the probes' and the target's): both paths, outputs too."""
    from timm.models.naflexvit import NaFlexEmbeds
    original = NaFlexEmbeds._apply_learned_pos_embed

    def off(self, x, grid_size):
        original(self, x, grid_size)
        x.add_(0.01)
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(NAFLEXVIT, '[64, 96]', 'create, dynamic'),
                              lambda broken: broken.setattr(NaFlexEmbeds, '_apply_learned_pos_embed', off),
                              'logits within')
    assert 'grid = (4, 6)' in texts['create'] and 'tables = tables_at(settings, expected, grid)' in texts['create']


def test_a_classic_vit_checkpoint_with_a_non_square_grid_fails_to_load_into_naflexvit_on_the_current_release(
        run_matrix, tmp_path):
    """timm 1.0.31's NaFlexVit filter reshapes a classic ViT's flat position embedding only when its grid is square
    (matrices/zoo-small.yaml): a 4x8 grid reaches an attribute NaFlexEmbeds lacks. The script writes the classic
    layout with the harness's own writer."""
    ((case, script),) = _family_scripts(run_matrix, tmp_path, tiny_matrix(NAFLEXVIT, '[64, 96]', 'create',
                                                                          'classic_vit')).values()
    assert case.failed_checks == ['load'], case.reason
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: load fails' in printed and "has no attribute 'patch_embed'" in printed, printed
    assert 'def classic_vit_state(' in script.read_text()   # the origin's own writer, carried


def test_an_efficientvit_table_fidelity_failure_reproduces_and_passes_once_fixed(run_matrix, tmp_path, monkeypatch):
    """LeViT's table resize 1% off: the windows of the last two stages grow (2 -> 3, 1 -> 2) on both paths."""
    from timm.models import efficientvit_msra
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(
        'name: efficientvit_m0, embed_dim: [32, 48, 64], key_dim: [8, 8, 8], depth: [1, 1, 1], '
        'num_heads: [2, 2, 2], window_size: [4, 4, 4], img_size: 64', '[96, 128]', 'create, set_input_size'),
        lambda broken: broken.setattr(efficientvit_msra, 'resize_rel_pos_bias_table_levit',
                                      _scaled(efficientvit_msra.resize_rel_pos_bias_table_levit)), 'attention_biases')
    assert 'windows = {0: (4, 4), 1: (2, 3), 2: (1, 2)}' in texts['create']


def test_feature_info_left_at_the_creation_patch_reproduces_on_the_current_release(run_matrix, tmp_path):
    """timm 1.0.31 keeps EVA's feature_info at the patch it was created with after set_input_size(patch_size=7)
    (matrices/zoo-eva.yaml): the family-independent features snippet compares it with forward_intermediates."""
    ((case, script),) = _family_scripts(run_matrix, tmp_path, tiny_matrix(
        'name: eva02_tiny_patch14_224, embed_dim: 32, depth: 1, num_heads: 2, img_size: 56, patch_sizes: [7]',
        '56', 'set_input_size')).values()
    assert case.failed_checks == ['features'], case.reason
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: features fails' in printed and 'reduction 14' in printed, printed


@pytest.mark.parametrize('model', ['name: swinv2_tiny_window8_256, img_size: [64, 96], window_size: [4, 6]',
                                   'name: swinv2_cr_tiny_224, img_size: [64, 128], window_size: [4, 8]'])
def test_a_continuous_position_bias_fidelity_failure_reproduces_and_passes_once_fixed(model, run_matrix, tmp_path,
                                                                                      monkeypatch):
    """Swin-V2's and V2-CR's coordinates 1% off, on every path (recomputed per forward): a block's coordinates or
    bias among the forward tensors, and on dynamic the logits too."""
    from timm.models import swin_transformer_v2, swin_transformer_v2_cr
    v2_table = swin_transformer_v2.WindowAttention._make_pair_wise_relative_positions
    cr_coords = swin_transformer_v2_cr.WindowMultiHeadAttention._make_pair_wise_relative_positions

    def v2_off(self, *args, **kwargs):   # returns (coordinates table, index)
        table, index = v2_table(self, *args, **kwargs)
        return table * 1.01, index

    def cr_off(self):   # fills its buffer
        cr_coords(self)
        self.relative_coordinates_log.mul_(1.01)

    def breaks(broken):
        broken.setattr(swin_transformer_v2.WindowAttention, '_make_pair_wise_relative_positions', v2_off)
        broken.setattr(swin_transformer_v2_cr.WindowMultiHeadAttention, '_make_pair_wise_relative_positions', cr_off)
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(
        f'{model}, embed_dim: 16, depths: [2, 2], num_heads: [1, 2]', '[96, 128]', 'create, dynamic'), breaks, '.attn.')
    assert 'check_forward_tensors(forward_tensors, forward_expected' in texts['create']


def test_a_flexivit_create_script_resamples_as_timm_chooses_for_the_model(run_matrix, tmp_path, monkeypatch):
    """timm loads FlexiViT weights resampling bilinear without antialiasing (VitFamily.create_resampling), whatever
    the origin's loader does: the script's oracle does so too, so it passes once a broken resample is fixed."""
    from timm.models import vision_transformer
    texts = fails_then_passes(run_matrix, tmp_path, monkeypatch, tiny_matrix(
        'name: flexivit_small, embed_dim: 32, depth: 1, num_heads: 2, img_size: [64, 96]', '[96, 64]', 'create'),
        lambda broken: broken.setattr(vision_transformer, 'resample_abs_pos_embed',
                                      _scaled(vision_transformer.resample_abs_pos_embed)), 'in pos_embed')
    assert "(4, 6), (6, 4), 0, 'bilinear', False)" in texts['create']


def test_a_user_checkpoint_is_loaded_from_its_file(run_matrix, tmp_path):
    """The file is named only in the matrix: the script loads it where it is, and synthesizes nothing."""
    import timm
    from safetensors.torch import save_file
    model = timm.create_model('vit_tiny_patch16_224', depth=1, img_size=32, num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / 'finetuned.safetensors'))
    matrix = SMALL_VIT.replace('[timm]', f"[{{file: {tmp_path / 'finetuned.safetensors'}, num_classes: 10}}]")
    case = next(iter(run_matrix(matrix + 'name: repro-file\npaths: [create]\n'
                                         'tolerances: {drift_min_cosine: 0.999999}\n').values()))
    assert case.status == 'failed' and case.failed_checks == ['drift'], case.reason
    script = tmp_path / 'file.py'
    text = repro(_recorded(tmp_path / 'run', case, tmp_path / 'matrix.yaml'), case.case_id, script)
    assert f"CHECKPOINT = '{tmp_path / 'finetuned.safetensors'}'" in text and 'trained_looking' not in text
    assert 'overlay = dict(file=CHECKPOINT, num_classes=10, input_size=(3, *SOURCE_SIZE), custom_load=False)' in text
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: drift fails' in printed, printed


def test_a_user_checkpoint_that_timm_changes_on_load_reproduces_reload(run_matrix, tmp_path):
    """reload of a `{file:}` compares timm's load with the file itself, in the script as in the harness: a Swin
    5x13 window's table, which timm reads as an 8x8 window's on every load."""
    from harness.checkpoints.synthesize import seeded_model
    from tests.test_file_origin import SWIN_5X13, _entry, _save
    name, kwargs = SWIN_5X13
    _save(seeded_model(name, kwargs, seed=0).state_dict(), tmp_path / 'swin.pth')
    (case,) = run_matrix(f"name: repro-reload\nmodels: [{_entry(name, kwargs)}]\n"
                         f"origins: [{{file: {tmp_path / 'swin.pth'}}}]\n"
                         'sizes: [[40, 104]]\npaths: [dynamic]\nnum_images: 2\n').values()
    assert case.status == 'failed' and case.failed_checks == ['reload'], case.reason
    script = tmp_path / 'reload.py'
    text = repro(_recorded(tmp_path / 'run', case, tmp_path / 'matrix.yaml'), case.case_id, script)
    assert 'reference = file_reference(CHECKPOINT, native)' in text
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: reload fails' in printed and 'relative_position_bias_table' in printed, printed


def test_a_failed_invariant_on_a_path_the_release_cannot_build_reproduces_without_building_it(run_matrix, tmp_path,
                                                                                              monkeypatch):
    """An older set_input_size without patch_size, whose own-size call moves the position embedding: the case
    fails noop while its path is unsupported, and the script checks noop without asking for the patch size."""
    from tests.test_pipeline import _set_input_size_without_patch_size
    _set_input_size_without_patch_size(monkeypatch, lambda model: model.pos_embed.data.mul_(1.001))
    (case,) = run_matrix(SMALL_VIT + 'name: repro-noop\npatch_sizes: [8]\npaths: [set_input_size]\n').values()
    assert case.status == 'failed' and case.failed_checks == ['noop'] and 'itself is unsupported' in case.reason
    script = tmp_path / 'noop.py'
    text = repro(_recorded(tmp_path / 'run', case, tmp_path / 'matrix.yaml'), case.case_id, script)
    assert "# 3. the case's path" not in text and 'patch_size' not in text.split('def main')[1]
    code, printed = run_here(script)
    assert code == 1 and 'REPRODUCED: noop fails' in printed, printed


def _recorded(run_dir: Path, result: CaseResult, matrix: Path | None = None) -> Path:
    """A run folder holding ``result`` as harness run leaves it, with a run.json naming ``matrix`` (by default a
    matrix file that is gone)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(matrix.read_bytes()).hexdigest() if matrix else ''
    write_run_record(run_dir, RunRecord(timm_version=result.timm_version, matrix_sha256=sha,
                                        argv=['harness', 'run', str(matrix or 'gone.yaml')]))
    append_result(run_dir, result)
    return run_dir


# --- the command line -----------------------------------------------------------------------------------------
def _case(status: str, **fields) -> CaseResult:
    return CaseResult(case_id=f'vit_tiny_patch16_224-timm-48x48-{status}', matrix='m', model='vit_tiny_patch16_224',
                      origin='timm', img_size=[48, 48], patch_size=None, window_size=None, path='create',
                      model_name='vit_tiny_patch16_224', model_overrides={'depth': 1, 'img_size': [32, 32]},
                      status=status, timm_version='1.0.30', **fields)


def test_bad_runs_and_cases_exit_2_with_one_line(tmp_path, capsys):
    append_result(tmp_path, _case('passed'))
    for args, says in (([str(tmp_path / 'nowhere'), 'x'], 'no results.jsonl there'),
                       ([str(tmp_path), 'vit_tiny_patch16_224-timm-48x48-passd'], 'did you mean'),
                       ([str(tmp_path), 'vit_tiny_patch16_224-timm-48x48-passed'], 'is passed in')):
        assert cli.main(['repro', *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and says in err and len(err.strip().splitlines()) == 1, err


def test_the_header_names_the_releases_from_compare_and_bisect(tmp_path):
    run_dir = tmp_path / 'bisect' / '1.0.30'
    failed = _case('failed', failed_checks=['fidelity'], reason='fidelity: pos_embed differs')
    _recorded(run_dir, failed)
    (run_dir / 'compare.json').write_text(
        '{"base": {"run": {"timm_version": "1.0.30"}}, "new": {"run": {"timm_version": "1.0.31"}}, "cases": '
        f'[{{"matrix": "m", "case_id": "{failed.case_id}", "base_status": "failed", "new_status": "passed"}}]}}')
    (run_dir.parent / 'bisect.json').write_text(
        f'{{"tested": [{{"version": "1.0.3", "statuses": {{"{failed.case_id}": "passed"}}}}, '
        f'{{"version": "0.9.16", "statuses": {{"{failed.case_id}": "failed"}}}}, {{"version": "1.0.8", '
        f'"statuses": null}}]}}')
    text = repro(run_dir, failed.case_id, tmp_path / 'r.py')
    assert ('Releases: timm failed on 0.9.16, 1.0.30 (results.jsonl, ../bisect.json); passed on 1.0.3, 1.0.31 '
            '(compare.json, ../bisect.json).') in words(text)
    assert f'Generated by: harness repro {run_dir} {failed.case_id} --out {tmp_path / "r.py"}' in words(text)
    assert "Tolerances: the defaults (gone.yaml, the run's matrix, is not there)." in words(text)


def test_help_gives_an_example(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(['repro', '--help'])
    assert exited.value.code == 0 and 'example:\n  harness repro reports/' in capsys.readouterr().out
