"""The smallest run without YAML: `harness run --model NAME --sizes ...` and `harness.run(dict)` from Python."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from harness.spec.one_model import matrix_dict, parse_sizes
from tests.conftest import REPO
from tests.test_cli import harness, records

TINY = {'name': 'api', 'models': [{'name': 'vit_tiny_patch16_224', 'embed_dim': 32, 'depth': 1, 'num_heads': 2,
                                   'img_size': 32}], 'origins': ['timm'], 'sizes': [48],
        'paths': ['create', 'set_input_size']}


def test_sizes_read_as_the_matrix_writes_them():
    assert parse_sizes('384,224x448') == [384, [224, 448]]
    assert parse_sizes('64') == [64]
    for bad in ('', '384,', '224x', '0', 'x448', '2x3x4', 'big'):
        with pytest.raises(argparse.ArgumentTypeError, match='expected sizes like 384,224x448'):
            parse_sizes(bad)


def test_the_one_model_matrix(tmp_path):
    assert matrix_dict('vit_base_patch16_224', [384]) == {
        'name': 'vit_base_patch16_224', 'models': ['vit_base_patch16_224'], 'origins': ['timm'], 'sizes': [384]}
    ckpt = tmp_path / 'ckpt.pth'
    mixed = matrix_dict('vit_base_patch16_224', [384], origins=['open_clip'], file=ckpt, num_classes=10)
    assert mixed['origins'] == ['open_clip', {'file': str(ckpt), 'num_classes': 10}]
    assert matrix_dict('vit_base_patch16_224', [384], file=ckpt)['origins'] == [{'file': str(ckpt)}]


@pytest.mark.parametrize('args, error', [
    ((), 'error: expected a MATRIX file, --model NAME --sizes N,HxW,... for one model, or --zoo GLOB'),
    (('--model', 'vit_tiny_patch16_224'), 'error: --model: expected --sizes too, e.g. --sizes 384,224x448'),
    (('matrices/smoke.yaml', '--sizes', '64'), 'error: --sizes: only with --model NAME (a MATRIX file sets its own)'),
    (('matrices/smoke.yaml', '--model', 'x', '--sizes', '64'),
     'error: --model: expected either a MATRIX file (matrices/smoke.yaml) or --model, not both'),
    (('--model', 'x', '--sizes', '64', '--num-classes', '3'),
     'error: --num-classes: only with --file CKPT (the classes of your checkpoint)'),
    (('--model', 'x', '--sizes', '64x'), "error: --sizes: expected sizes like 384,224x448"),
])
def test_mixed_or_missing_arguments_are_one_line_errors(args, error, tmp_path):
    done = harness('run', *args, '--out', tmp_path / 'out', cwd=REPO)
    assert done.returncode == 2 and done.stderr.startswith(error) and done.stderr.count('\n') == 1
    assert not (tmp_path / 'out').exists()


def test_run_one_model_writes_its_matrix_and_resumes(tmp_path):
    out = tmp_path / 'out'
    command = ('run', '--model', 'vit_tiny_patch16_224', '--sizes', '48,48x64', '--out', out, '--no-timing',
               '-k', '48x48 and create', '-q')
    done = harness(*command)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [r['case_id'] for r in records(out)] == ['vit_tiny_patch16_224-timm-48x48-create']
    matrix = out / 'vit_tiny_patch16_224.yaml'
    assert 'sizes:\n- 48\n- [48, 64]\n' in matrix.read_text()
    assert json.loads((out / 'run.json').read_text())['matrix_name'] == 'vit_tiny_patch16_224'
    again = harness(*command, '--resume')   # the same matrix bytes: the run's sha256 matches
    assert again.returncode == 0 and 'nothing left to run' in again.stdout, again.stderr[-2000:]


def test_python_entry_point_returns_the_results_frame(tmp_path):
    script = ('import harness, json, sys\n'
              'frame = harness.run(json.loads(sys.argv[1]), out=sys.argv[2], no_timing=True, q=True)\n'
              'print(type(frame).__name__, frame["status"].tolist())\n'
              'try:\n    harness.run({**json.loads(sys.argv[1]), "sizes": [0]}, out=sys.argv[2] + "-bad")\n'
              'except harness.api.HarnessRunError as e:\n    print("raised", e)\n')
    done = subprocess.run([sys.executable, '-c', script, json.dumps(TINY), str(tmp_path / 'api')],
                          capture_output=True, text=True, cwd=tmp_path)
    lines = done.stdout.splitlines()
    assert "DataFrame ['passed', 'passed']" in lines, done.stdout[-2000:] + done.stderr[-2000:]
    assert lines[-1].startswith(f'raised harness run {tmp_path}/api-bad/api.yaml exited 2: bad input')
    assert (tmp_path / 'api' / 'api.yaml').is_file() and (tmp_path / 'api' / 'report.md').is_file()
