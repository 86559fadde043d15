"""What is loaded is what was vetted, and the harness's own faults are ``error``, never timm's ``failed``.

- a user's file replaced while its cases run is never loaded: timm is given the vetted copy in the cache;
- an ``.npz`` holding an object array (a pickle) is refused, exit 2;
- a corrupted checkpoint-cache entry is found by its checksums and rebuilt: the cases pass, the run is told;
- a full disk (a file-size limit, ``ulimit -f``, in the harness's processes) is ``error: disk full`` in one line;
- a checkpoint that cannot be made or loaded gives every one of its cases its reason.
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from harness.case.runner import run_case
from harness.case.work import CheckpointWork, RunOptions
from harness.checkpoints.integrity import CHECKSUMS_FILE
from harness.checkpoints.store import USER_FILES, checkpoint_for
from harness.spec.cases import expand
from harness.spec.matrix import MatrixError, load_matrix
from harness.timing.config import TimingConfig
from tests.conftest import REPO
from tests.swap_file_after_first_case import SOURCE_ENV, TARGET_ENV
from tests.test_cli import harness, records

TINY = {'name': 'vit_tiny_patch16_224', 'embed_dim': 32, 'depth': 1, 'num_heads': 2, 'img_size': 32}


class _TouchesMarker:
    """A pickle payload that creates a file when unpickled unsafely."""
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _matrix_text(origin: str, sizes: str = '[48]') -> str:
    model = '{' + ', '.join(f'{k}: {v}' for k, v in TINY.items()) + '}'
    return f'name: faults\nmodels: [{model}]\norigins: [{origin}]\nsizes: {sizes}\nnum_images: 2\n'


def _state() -> dict[str, torch.Tensor]:
    kwargs = {k: v for k, v in TINY.items() if k != 'name'}
    return timm.create_model(TINY['name'], **kwargs).state_dict()


@pytest.fixture
def cases(write_matrix, known_models, tmp_path):
    """``cases(text)``: the matrix's cases, a worker's shared work over a cache of the test's own, and the lines
    the run says; the cases are run one by one by the test (so files can change between them)."""
    said: list[str] = []

    def make(text: str):
        matrix = load_matrix(write_matrix(text), known_models)
        options = RunOptions(torch.device('cpu'), tmp_path / 'cache', tmp_path / 'run',
                             TimingConfig(enabled=False, batch_size=2, warmup=0, budget_s=0.0, min_repeats=2),
                             say=said.append)
        return CheckpointWork(matrix, options), expand(matrix), said
    return make


# --- what is loaded is what was vetted ------------------------------------------------------------------------

def test_a_file_replaced_after_the_first_case_is_never_loaded(cases, tmp_path):
    """The file is vetted and copied when the checkpoint's first case runs; replaced then by a pickle payload,
    the other cases (which build from the file again: create at each target, dynamic) load the copy and pass,
    and nothing runs. Given the user's path, timm 1.0.31 refuses the swapped file (those cases fail against timm)
    and timm 1.0.11 runs its payload."""
    user_file, marker = tmp_path / 'finetuned.pth', tmp_path / 'code-ran'
    torch.save(_state(), user_file)
    work, all_cases, _ = cases(_matrix_text(f'{{file: {user_file}}}', sizes='[48, 64]'))
    assert len(all_cases) == 6
    first = run_case(all_cases[0], work)
    torch.save({**_state(), 'payload': _TouchesMarker(marker)}, user_file)
    results = [first] + [run_case(case, work) for case in all_cases[1:]]
    assert [r.status for r in results] == ['passed'] * 6, [r.reason for r in results]
    assert all(r.native_max_abs_diff == 0.0 and r.reference_note is None for r in results)
    assert not marker.exists()
    copies = list((tmp_path / 'cache' / 'checkpoints' / USER_FILES).glob('*/checkpoint.pth'))
    assert len(copies) == 1 and copies[0].stat().st_mode & 0o222 == 0   # read-only: never written again
    assert copies[0].parent.name.endswith('-pth') and len(copies[0].parent.name) == 64 + len('-pth')


@pytest.mark.slow
def test_a_payload_swapped_in_between_cases_never_runs_under_timm_1_0_11(write_matrix, tmp_path, release_cache):
    """The probe of issue 18: timm 1.0.11 loads pretrained files with weights_only=False; the user's file,
    replaced by a pickle payload after the first case (tests/swap_file_after_first_case.py), ran it 4 times in the
    worker. Now timm loads the copy vetted when the first case ran: nothing runs, and the cases are not failed."""
    user_file, swapped_in, marker = tmp_path / 'finetuned.pth', tmp_path / 'evil.pth', tmp_path / 'code-ran'
    torch.save(_state(), user_file)
    torch.save({**_state(), 'payload': _TouchesMarker(marker)}, swapped_in)
    done = harness('run', write_matrix(_matrix_text(f'{{file: {user_file}}}', sizes='[48, 64]')), '--timm', '1.0.11',
                   '--out', tmp_path / 'out', '--cache', release_cache, '--no-timing',
                   '-p', 'tests.swap_file_after_first_case',
                   env_extra={'PYTHONPATH': os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
                              SOURCE_ENV: str(swapped_in), TARGET_ENV: str(user_file)})
    assert not swapped_in.exists(), 'the plugin did not swap the file: the test proves nothing'
    assert not marker.exists(), 'the payload ran'
    found = records(tmp_path / 'out')
    assert len(found) == 6 and all(r['timm_version'] == '1.0.11' for r in found)
    assert {r['status'] for r in found} == {'passed'}, [(r['case_id'], r['status'], r['reason']) for r in found]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_a_file_replaced_before_its_cases_run_is_vetted_again_and_refused(cases, tmp_path):
    """Replaced after the matrix was vetted, before any case: the copy is vetted, refused, every case is error."""
    user_file, marker = tmp_path / 'finetuned.pth', tmp_path / 'code-ran'
    torch.save(_state(), user_file)
    work, all_cases, _ = cases(_matrix_text(f'{{file: {user_file}}}'))
    torch.save({**_state(), 'payload': _TouchesMarker(marker)}, user_file)
    results = [run_case(case, work) for case in all_cases]
    assert len(results) == 3 and not marker.exists()
    for r in results:
        assert r.status == 'error' and r.reason.startswith(f'checkpoint: {user_file} (as read when its cases ran'), \
            r.reason
        assert 'refused' in r.reason and 'Traceback' not in r.reason


def test_an_npz_holding_an_object_array_is_refused(write_matrix, known_models, tmp_path):
    """numpy opens an .npz lazily: an object array (a pickle, here of a callable) is found only by reading it.
    Refused at validation, so `harness run` exits 2 before any case (the MatrixError path of every bad file)."""
    marker = tmp_path / 'code-ran'
    arrays = {k: v.numpy() for k, v in _state().items()}
    np.savez(tmp_path / 'weights.npz', **arrays, payload=np.array([_TouchesMarker(marker)], dtype=object))
    with pytest.raises(MatrixError) as refused:
        load_matrix(write_matrix(_matrix_text(f'{{file: {tmp_path / "weights.npz"}, custom_load: true}}')),
                    known_models)
    assert len(refused.value.problems) == 1, refused.value.problems
    assert refused.value.problems[0].startswith(f"origins[0].file: checkpoint file '{tmp_path / 'weights.npz'}' "
                                                f"refused: it holds pickled objects"), refused.value.problems
    assert not marker.exists()


# --- the cache: checksums, rebuilt when corrupted -------------------------------------------------------------

def _flip_a_byte_near_the_end(path: Path) -> None:
    """One byte near the end changed (a safetensors file still reads, one value of its last tensor changed)."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.chmod(0o644)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize('origin', ['timm', 'file'])
def test_a_corrupted_cache_entry_is_rebuilt_and_said(cases, tmp_path, origin):
    """The entry's checkpoint changed on disk after it was written: before, every case failed reload against
    timm (24 in the probe); now its checksums find it, it is made again, the run is told, the cases pass."""
    if origin == 'file':
        torch.save(_state(), tmp_path / 'finetuned.pth')
        origin = f'{{file: {tmp_path / "finetuned.pth"}}}'
    work, all_cases, said = cases(_matrix_text(origin))
    checkpoint = checkpoint_for(all_cases[0].model, all_cases[0].origin, work.matrix.seed, work.options.cache_dir)
    assert (checkpoint.file.parent / CHECKSUMS_FILE).is_file() and not said
    _flip_a_byte_near_the_end(checkpoint.file)
    results = [run_case(case, work) for case in all_cases]
    assert [r.status for r in results] == ['passed'] * 3, [r.reason for r in results]
    assert results[0].native_max_abs_diff == 0.0
    assert len(said) == 1 and said[0].startswith(f'checkpoint cache: {checkpoint.file.parent} holds a '
                                                 f'{checkpoint.file.name} whose sha256 is'), said
    assert said[0].endswith('synthesizing it again' if 'file' not in origin else 'finetuned.pth again')


# --- a checkpoint that cannot be made gives each of its cases the reason --------------------------------------

def test_a_checkpoint_that_cannot_be_made_gives_every_case_its_reason(cases, monkeypatch):
    """Its model cannot be built (here the synthesis raises, as an older release's constructor does for an
    argument it lacks): every case is error with that reason; before, the first case had it and the others
    `AttributeError: 'NoneType' object has no attribute 'geometry'`."""
    import harness.checkpoints.synthesize as synthesize

    def unbuildable(*args, **kwargs):
        raise TypeError("VisionTransformer.__init__() got an unexpected keyword argument 'reg_tokens'")
    monkeypatch.setattr(synthesize, 'seeded_model', unbuildable)
    work, all_cases, _ = cases(_matrix_text('timm', sizes='[48, 64]'))
    results = [run_case(case, work) for case in all_cases]
    assert len(results) == 6
    for r in results:
        assert r.status == 'error', r.reason
        assert r.reason.startswith("checkpoint: it could not be loaded at its own configuration: TypeError: "
                                   "VisionTransformer.__init__() got an unexpected keyword argument 'reg_tokens'"), \
            r.reason


def _create_case(cases, model: str, embed_dim: int):
    """The one case of ``model`` (one block, two heads, trained at 64x64) created at 96x96 from a timm checkpoint."""
    work, all_cases, _ = cases(f'name: one\nmodels: [{{name: {model}, embed_dim: {embed_dim}, depth: 1, num_heads: 2, '
                               f'img_size: 64}}]\norigins: [timm]\nsizes: [96]\npaths: [create]\nnum_images: 2\n')
    [result] = [run_case(case, work) for case in all_cases]
    return result


def test_a_model_that_fetches_more_weights_from_an_unreachable_hub_is_unsupported_not_failed(cases, monkeypatch):
    """A hybrid ViT builds its ResNet backbone with ``pretrained=True``: timm downloads the backbone's weights
    before it loads the checkpoint over them. Without the hub (this machine, CI) that call cannot be made, so
    its cases are unsupported with the reason, not a load failure of timm's (the zoo sweep had 60 such cases).
    The hub is made unreachable here whatever the machine's network."""
    import timm.models._hub as hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError('An error happened while trying to locate the file on the Hub')
    monkeypatch.setattr(hub, 'hf_hub_download', unreachable)
    result = _create_case(cases, 'vit_small_resnet26d_224', embed_dim=32)
    assert result.status == 'unsupported', (result.status, result.reason, result.load_error)
    assert result.reason.startswith('vit_small_resnet26d_224 needs the network: timm fetches weights from the '
                                    'Hugging Face hub while building it, besides the checkpoint '
                                    '(LocalEntryNotFoundError: '), result.reason
    assert result.load_error is None


def test_a_model_without_a_classification_head_is_unsupported_not_failed(cases):
    """timm's encoders for language models (Qwen3VitEncoder, ...) raise NotImplementedError in forward_head by
    design: what every check compares cannot be computed, so the case is unsupported with the reason, not a
    shapes failure of timm's (the zoo sweep's one cnn finding)."""
    result = _create_case(cases, 'qwen3_vit_88m_enc', embed_dim=64)
    assert result.status == 'unsupported', (result.status, result.reason, result.shape_errors)
    assert result.reason.startswith('qwen3_vit_88m_enc has no classification head: forward_head on (2, 3, 64, 64) '
                                    'raised NotImplementedError: Qwen3VitEncoder does not support classification'), \
        result.reason


# --- a full disk ----------------------------------------------------------------------------------------------

def _run_with_file_size_limit(limit_bytes: int, *args) -> subprocess.CompletedProcess:
    """``harness run`` whose processes (its workers too) may write no file past ``limit_bytes``: a write past it
    fails as on a full disk (EFBIG; SIGXFSZ ignored, so it is an error, not a kill)."""
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, '-m', 'harness.cli', 'run', *map(str, args), '--no-timing'],
                          capture_output=True, text=True, preexec_fn=limit, timeout=300)


def test_a_full_disk_while_synthesizing_is_error_on_every_case_not_failed(write_matrix, tmp_path):
    """The checkpoint (about 100 kB) cannot be written: every case is `error: disk full`, in one line each; the
    records and the report (a few kB) are written."""
    out = tmp_path / 'out'
    done = _run_with_file_size_limit(50_000, write_matrix(_matrix_text('timm')), '--out', out,
                                     '--cache', tmp_path / 'cache')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'Traceback' not in done.stdout + done.stderr
    found = records(out)
    assert len(found) == 3 and {r['status'] for r in found} == {'error'}
    assert all(r['reason'].startswith('disk full: ') and 'File too large' in r['reason'] for r in found)
    totals = '3 cases: 0 passed, 0 failed, 0 xfailed, 0 xpassed, 0 unsupported, 3 error'
    assert totals in (out / 'report.md').read_text()


def test_a_full_disk_for_the_results_says_so_in_one_line_per_case_and_keeps_whole_records(write_matrix, tmp_path):
    """The checkpoint is cached; the results file reaches the limit after two records: the cases whose record
    cannot be written say `error: disk full` (no traceback), results.jsonl holds whole records only, and the
    report that cannot be written is one line."""
    matrix_path = write_matrix(_matrix_text('timm', sizes='[48, 64]'))
    case = expand(load_matrix(matrix_path, timm.list_models()))[0]
    checkpoint_for(case.model, case.origin, 0, tmp_path / 'cache')
    out = tmp_path / 'out'
    done = _run_with_file_size_limit(6_000, matrix_path, '--out', out, '--cache', tmp_path / 'cache')
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert 'Traceback' not in done.stdout + done.stderr
    lines = (out / 'results.jsonl').read_text().splitlines(keepends=True)
    assert 1 <= len(lines) < 6 and all(line.endswith('\n') and json.loads(line) for line in lines)
    full = [line for line in done.stdout.splitlines()   # each case's console line (harness.console)
            if re.match(r'error +\S+  [\d.]+ s  disk full: the record of this case', line)]
    assert len(full) == 6 - len(lines), done.stdout[-3000:]
    assert done.stderr.startswith('error: disk full: the report could not be written'), done.stderr
    again = _run_with_file_size_limit(6_000, matrix_path, '--out', out, '--cache', tmp_path / 'cache', '--resume')
    assert again.returncode == 1, again.stdout[-3000:] + again.stderr[-3000:]   # what it kept all passed: not 0
    assert (out / 'results.jsonl').read_text().splitlines(keepends=True) == lines
