"""Bounds before work (harness.spec.limits): hostile or careless matrix files are refused in about a second, with
bounded memory and one short `error:` line naming the file, the field and the limit, before timm is imported.

Before these bounds, a 410-byte alias bomb took 11.7 GB and 4 minutes, `harness run /dev/zero` reached 8 GB in
30 s, a 31 MB `sizes:` list was still collecting after 10 minutes and a 50 MB `name:` printed 850 MB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.spec.limits import (
    MAX_IDENTIFIER_CHARS,
    MAX_ITEMS,
    MAX_MATRIX_BYTES,
    MAX_NUM_IMAGES,
    MAX_PROBLEM_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MAX_TEXT_CHARS,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    QUOTE_CHARS,
    shown,
)
from harness.spec.matrix_file import MatrixFileError, read_matrix_file
from tests.test_cli import harness
from tests.test_inputs import one_error_line

HEAD = 'name: bomb\nmodels: [vit_tiny_patch16_224]\norigins: [timm]\n'
LINE_LIMIT = 400   # characters an error line may take, whatever the value it refuses


def bomb(levels: int = 9) -> str:
    """The billion laughs: ``levels`` lists of 9 aliases to the one before, 9 ** levels strings in all; 410 bytes
    at 9 levels."""
    lines = [HEAD.rstrip('\n'), 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip('abcdefgh', 'bcdefghi'[:levels - 1]):
        lines.append(f'{name}: &{name} [' + ','.join([f'*{previous}'] * 9) + ']')
    return '\n'.join(lines) + f'\nsizes: *{"abcdefghi"[levels - 1]}\n'


def refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / 'matrix.yaml'
    path.write_text(text)
    with pytest.raises(MatrixFileError) as info:
        read_matrix_file(path)
    assert str(info.value).startswith(f'{path}: ')
    return info.value.problem


def measured(path: Path) -> dict:
    """read_matrix_file(path) in a fresh interpreter: its error, seconds and peak RSS. The peak is the kernel's
    high-water mark of the interpreter's own memory (VmHWM): ``getrusage``'s ru_maxrss keeps the peak of the pytest
    process it was forked from across exec."""
    script = textwrap.dedent('''
        import json, sys, time
        from pathlib import Path
        from harness.spec.matrix_file import MatrixFileError, read_matrix_file
        def peak_kb():
            status = Path('/proc/self/status').read_text().splitlines()
            return next(int(line.split()[1]) for line in status if line.startswith('VmHWM:'))
        start = time.perf_counter()
        try:
            read_matrix_file(Path(sys.argv[1]))
            error = None
        except MatrixFileError as e:
            error = e.problem
        print(json.dumps({'error': error, 'seconds': time.perf_counter() - start,
                          'peak_mb': peak_kb() / 1024,
                          'modules': sorted({'timm', 'torch'} & set(sys.modules))}))
    ''')
    done = subprocess.run([sys.executable, '-c', script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_alias_bomb_is_refused_at_once_in_bounded_memory(tmp_path):
    path = tmp_path / 'bomb.yaml'
    path.write_text(bomb())
    assert len(path.read_bytes()) == 410
    got = measured(path)
    assert got['error'] == (f'f: expands to more than {MAX_YAML_VALUES} values (each use of an alias counts its '
                            f'values again); the limit is {MAX_YAML_VALUES} (MAX_YAML_VALUES)')
    # unbounded it took 11.7 GB and 4 minutes; an interpreter with yaml imported takes about 20 MB
    assert got['peak_mb'] < 100 and got['seconds'] < 5, got
    assert got['modules'] == []


def test_aliases_within_the_bound_still_load(tmp_path):
    """Anchors, aliases and merge keys are legitimate YAML: only the expanded size is bounded."""
    text = (HEAD + 'sizes: &sizes [64, [64, 128]]\n'
            'tolerances: {per_path: {create: &limits {parity_atol: 0.001}, dynamic: {<<: *limits, noop_atol: 0}}}\n'
            'patch_sizes: *sizes\n')
    raw = read_matrix_file(_written(tmp_path, text))
    assert raw['patch_sizes'] == [64, [64, 128]]
    assert raw['tolerances']['per_path']['dynamic'] == {'parity_atol': 0.001, 'noop_atol': 0}
    # the bomb counts once per use: at 4 levels it expands to 15,697 values and loads; at 5 to 141,177 and not
    assert read_matrix_file(_written(tmp_path, bomb(4)))['sizes'][0][0][0] == ['lol'] * 9
    assert 'MAX_YAML_VALUES' in refusal(tmp_path, bomb(5))


def test_recursive_yaml_is_refused(tmp_path):
    assert refusal(tmp_path, HEAD + 'sizes: &a [64, *a]\n') == \
        'sizes[1]: an alias refers to a value that holds it; a matrix cannot be recursive'


@pytest.mark.parametrize('make, expected', [
    (lambda tmp: Path('/dev/zero'), 'is not a regular file (a device, FIFO or socket); expected a YAML matrix file'),
    (lambda tmp: _fifo(tmp), 'is not a regular file (a device, FIFO or socket); expected a YAML matrix file'),
    (lambda tmp: _written(tmp, HEAD + '#' * MAX_MATRIX_BYTES),
     f'{MAX_MATRIX_BYTES + len(HEAD)} bytes; the limit is {MAX_MATRIX_BYTES} bytes for a matrix file '
     f'(MAX_MATRIX_BYTES)'),
])
def test_files_that_are_not_small_regular_files_are_never_read(tmp_path, make, expected):
    """`harness run /dev/zero` reached 8 GB in 30 s; a FIFO with no writer would block forever."""
    path = make(tmp_path)
    got = measured(path)
    assert got['error'] == expected and got['peak_mb'] < 100 and got['seconds'] < 5, got


def test_one_byte_over_the_size_limit_is_refused_and_the_limit_itself_is_not(tmp_path):
    padding = MAX_MATRIX_BYTES - len(HEAD) - len('sizes: [64]\n') - 1
    assert read_matrix_file(_written(tmp_path, HEAD + 'sizes: [64]\n' + '#' * padding + '\n'))['sizes'] == [64]
    assert 'MAX_MATRIX_BYTES' in refusal(tmp_path, HEAD + 'sizes: [64]\n' + '#' * (padding + 1) + '\n')


FIELD_BOUNDS = [
    # sizes, pixels and memory
    (HEAD + 'sizes: [[100000, 100000]]\n', f'sizes[0]: [100000, 100000] exceeds {MAX_SIDE} pixels per side (MAX_SIDE)'),
    (HEAD + f'sizes: [64]\npatch_sizes: [{MAX_SIDE + 1}]\n',
     f'patch_sizes[0]: {MAX_SIDE + 1} exceeds {MAX_SIDE} pixels'),
    ('name: b\nmodels: [{name: vit_tiny_patch16_224, img_size: 5000, window_sizes: [7]}]\n'
     'origins: [timm]\nsizes: [64]\n',
     'models[0].img_size: 5000 exceeds'),
    (HEAD + 'sizes: [' + ', '.join(['64'] * (MAX_ITEMS + 1)) + ']\n',
     f'sizes: more than {MAX_ITEMS} entries; the limit is {MAX_ITEMS} per list or mapping (MAX_ITEMS)'),
    (HEAD + 'sizes: [' * (MAX_YAML_DEPTH + 5) + ']' * (MAX_YAML_DEPTH + 5) + '\n',
     f'nested more than {MAX_YAML_DEPTH} deep (MAX_YAML_DEPTH)'),
    (HEAD + 'sizes: [64]\nnum_images: 100000000\n',
     f'num_images: 100000000 exceeds the limit of {MAX_NUM_IMAGES} images per case (MAX_NUM_IMAGES)'),
    (HEAD + f'sizes: [64]\nseed: {MAX_SEED + 1}\n', f'seed: {MAX_SEED + 1} exceeds {MAX_SEED}, the largest seed torch '
                                                   f'accepts (MAX_SEED)'),
    # tolerances: NaN fails every figure, a negative limit every difference
    (HEAD + 'sizes: [64]\ntolerances: {parity_atol: .nan}\n',
     'tolerances.parity_atol: expected a finite number >= 0 (or null: report only), got nan'),
    (HEAD + 'sizes: [64]\ntolerances: {reload_atol: -1.0e-3}\n',
     'tolerances.reload_atol: expected a finite number >= 0'),
    (HEAD + 'sizes: [64]\ntolerances: {noop_atol: .inf}\n', 'tolerances.noop_atol: expected a finite number >= 0'),
    (HEAD + 'sizes: [64]\ntolerances: {per_path: {dynamic: {parity_atol: -1e-3}}}\n',   # YAML 1.1: a string
     "tolerances.per_path.dynamic.parity_atol: expected a finite number >= 0 (or null: report only), got '-1e-3'"),
    (HEAD + 'sizes: [64]\ntolerances: {parity_min_cosine: -0.5}\n',
     'tolerances.parity_min_cosine: expected a finite number >= 0'),
]


@pytest.mark.parametrize('text, expected', FIELD_BOUNDS, ids=[expected.split(':')[0] for _, expected in FIELD_BOUNDS])
def test_bounds_on_fields(tmp_path, text, expected):
    """Each bound named with its limit; the ids of these cases are their expected messages."""
    assert expected in refusal(tmp_path, text)


@pytest.mark.parametrize('field, value, expected', [
    ('name', '"a\\nb"', "got 'a\\nb'"), ('name', '"a\\tb"', "got 'a\\tb'"), ('name', 'a/b', "got 'a/b'"),
    ('name', 'a..b', "got 'a..b'"), ('name', '..', "got '..'"), ('name', '""', "got ''"),
    ('name', 'x' * 300, f'300 characters ({"x" * QUOTE_CHARS!r}... (300 characters)); the limit is '
                        f'{MAX_IDENTIFIER_CHARS} (MAX_IDENTIFIER_CHARS)'),
    ('label', '"a::b"', "got 'a::b'"), ('label', 'a/b', "got 'a/b'"), ('label', '"a b"', "got 'a b'"),
    ('label', 'y' * 65, '65 characters'),
    ('model', '"vit\\ttiny"', "got 'vit\\ttiny'"),
], ids=lambda value: value[:20] if isinstance(value, str) else None)
def test_names_and_labels_are_plain_identifiers(tmp_path, field, value, expected):
    """A name becomes the folder reports/<name>, a label part of every case id (which -k and pytest's `::` split)."""
    if field == 'name':
        text, where = HEAD.replace('name: bomb', f'name: {value}') + 'sizes: [64]\n', 'name: '
    elif field == 'label':
        text, where = HEAD.replace('[vit_tiny_patch16_224]', f'[{{name: vit_tiny_patch16_224, label: {value}}}]') + \
            'sizes: [64]\n', 'models[0].label: '
    else:
        text, where = HEAD.replace('[vit_tiny_patch16_224]', f'[{value}]') + 'sizes: [64]\n', 'models[0].name: '
    problem = refusal(tmp_path, text)
    assert problem.startswith(where) and expected in problem, problem


def test_names_and_labels_at_the_limits_are_accepted(tmp_path):
    name, label = 'n' * MAX_IDENTIFIER_CHARS, 'A-z_0.9'
    raw = read_matrix_file(_written(tmp_path, HEAD.replace('name: bomb', f'name: {name}').replace(
        '[vit_tiny_patch16_224]', f'[{{name: vit_tiny_patch16_224, label: {label}}}]') + f'sizes: [{MAX_SIDE}]\n'
        f'num_images: {MAX_NUM_IMAGES}\nseed: {MAX_SEED}\ntolerances: {{parity_atol: 0, parity_min_cosine: 1}}\n'))
    assert raw['name'] == name and raw['models'][0]['label'] == label and raw['seed'] == MAX_SEED


def test_max_seed_is_what_torch_accepts():
    import torch
    torch.Generator().manual_seed(MAX_SEED)
    with pytest.raises((RuntimeError, ValueError), match='Overflow'):
        torch.Generator().manual_seed(MAX_SEED + 1)


def test_a_long_value_is_quoted_short(tmp_path):
    """A 50 MB `name:` printed 850 MB of error; now no error line quotes more than a short prefix."""
    long_name = refusal(tmp_path, HEAD.replace('bomb', 'x' * 500_000) + 'sizes: [64]\n')
    assert long_name == (f"name: a value of 500000 characters ({'x' * QUOTE_CHARS!r}... (500000 characters)); "
                         f"the limit is {MAX_TEXT_CHARS} (MAX_TEXT_CHARS)")
    # PyYAML's own messages quote what they stumbled on: an undefined alias of half a megabyte is cut
    undefined = refusal(tmp_path, HEAD + 'sizes: *' + 'q' * 500_000 + '\n')
    assert undefined.startswith('not valid YAML at line 4, column 8: found undefined alias')
    assert len(undefined) == MAX_PROBLEM_CHARS + len('...')
    assert len(shown(list(range(10 ** 6)))) <= QUOTE_CHARS + 30
    assert len(shown({'k': [[[['deep'] * 1000]]]})) <= QUOTE_CHARS + 30


PROBES = {   # what each probe of issue 18 gets from `harness run`
    'alias bomb': (bomb(), 'expands to more than'),
    '500,000-character name': (HEAD.replace('bomb', 'x' * 500_000) + 'sizes: [64]\n',
                               'name: a value of 500000 characters'),
    '100000x100000': (HEAD + 'sizes: [[100000, 100000]]\n', 'exceeds 4096 pixels per side'),
    'num_images 1e8': (HEAD + 'sizes: [64]\nnum_images: 100000000\n', 'MAX_NUM_IMAGES'),
    'newline in name': (HEAD.replace('bomb', '"a\\nb"') + 'sizes: [64]\n', 'expected a plain folder name'),
}


@pytest.mark.parametrize('probe', PROBES)
def test_harness_run_refuses_in_one_short_line(tmp_path, probe):
    text, expected = PROBES[probe]
    path = _written(tmp_path, text)
    line = one_error_line(harness('run', path, cwd=tmp_path))
    assert line.startswith(f'error: {path}: ') and expected in line and len(line) < LINE_LIMIT, line[:1000]
    assert not (tmp_path / 'reports').exists()


def test_harness_run_refuses_dev_zero(tmp_path):
    line = one_error_line(harness('run', '/dev/zero', cwd=tmp_path, timeout_s=60))
    assert line == 'error: /dev/zero: is not a regular file (a device, FIFO or socket); expected a YAML matrix file'


def _written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / 'written.yaml'
    path.write_text(text)
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / 'fifo.yaml'
    os.mkfifo(path)
    return path

