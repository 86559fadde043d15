"""README's examples stay true: every `harness ...` command it shows names a subcommand and flags that exist,
matrix files that exist, and case ids that the matrix it names expands to (by the harness's own expansion, no
case run)."""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from harness.cli import _parser
from harness.spec.cases import expand
from harness.spec.matrix import load_matrix
from harness.spec.vocabulary import PATHS

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
CASE_ID = re.compile(rf'[\w.=-]+-\d+x\d+(?:-[\w]+)*?-(?:{"|".join(PATHS)})\b')


@dataclass(frozen=True)
class Example:
    text: str       # a fenced code block, or one inline code span that starts with `harness `
    line: int       # where it starts in README.md

    def commands(self) -> list[list[str]]:
        """Each `harness SUBCOMMAND ...` in it, as words, with line continuations joined and comments cut."""
        joined = self.text.replace('\\\n', ' ')
        lines = (line.split('  #')[0].split(' # ')[0] for line in joined.splitlines())
        return [shlex.split(line) for line in map(str.strip, lines) if re.match(r'harness \w', line)]

    def matrices(self) -> set[str]:
        """The matrices it names: matrices/NAME.yaml, or a run folder reports/NAME-... or reports/NAME."""
        named = set(re.findall(r'matrices/(\w+)\.yaml', self.text))
        named |= {n for n in re.findall(r'reports/([a-z]+)\b', self.text)
                  if (ROOT / 'matrices' / f'{n}.yaml').is_file()}
        return named


def examples() -> list[Example]:
    text = README.read_text()
    found = [Example(m.group(1), text.count('\n', 0, m.start()) + 1)
             for m in re.finditer(r'^```\w*\n(.*?)^```', text, re.S | re.M)]
    without_blocks = re.sub(r'^```.*?^```', lambda m: '\n' * m.group(0).count('\n'), text, flags=re.S | re.M)
    found += [Example(m.group(1), without_blocks.count('\n', 0, m.start()) + 1)
              for m in re.finditer(r'`(harness [^`]+)`', without_blocks)]
    return found


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@cache
def _pytest_help() -> str:
    """`harness run` hands options it does not know to pytest."""
    return subprocess.run([sys.executable, '-m', 'pytest', '--help', '-p', 'no:cacheprovider'], capture_output=True,
                          text=True, cwd=ROOT / 'harness', check=True).stdout


@cache
def _case_ids(matrix: str) -> frozenset[str]:
    return frozenset(case.case_id for case in expand(load_matrix(ROOT / 'matrices' / f'{matrix}.yaml')))


def _flags(words: list[str]) -> list[str]:
    """The options among a command's words: '[--timm' -> '--timm', '--out=DIR' -> '--out'."""
    return [w.strip('[]').split('=')[0] for w in words if re.fullmatch(r'\[?--?[A-Za-z][\w-]*(=.*)?\]?', w)]


def test_readme_has_the_examples_this_test_reads():
    """The extraction finds README's command table, synopsis and walkthrough (a test that read nothing would
    pass whatever README said)."""
    commands = [words for example in examples() for words in example.commands()]
    assert len(commands) > 40
    assert {words[1] for words in commands} >= set(_subcommands())
    assert sum(bool(CASE_ID.search(e.text)) for e in examples()) >= 3


def test_every_command_names_a_subcommand_and_flags_that_exist():
    subcommands = _subcommands()
    wrong = []
    for example in examples():
        for words in example.commands():
            if words[1] not in subcommands:
                wrong.append(f'README.md:{example.line}: no subcommand {words[1]!r}')
                continue
            known = subcommands[words[1]]._option_string_actions
            for flag in _flags(words[2:]):
                if flag in known:
                    continue
                takes_pytest = subcommands[words[1]].get_default('takes_pytest_options')
                if not (takes_pytest and re.search(rf'(^|[\s,]){re.escape(flag)}\b', _pytest_help(), re.M)):
                    wrong.append(f'README.md:{example.line}: harness {words[1]} has no {flag}')
    assert wrong == []


def test_every_matrix_file_named_exists():
    named = {m for example in examples() for m in re.findall(r'matrices/[\w-]+\.yaml', example.text)}
    assert named and [m for m in sorted(named) if not (ROOT / m).is_file()] == []


def test_every_case_id_is_a_case_of_the_matrix_it_names():
    """A block that names no matrix (the repro scripts run) continues the one before it."""
    checked, matrices = [], set()
    for example in sorted(examples(), key=lambda e: e.line):
        matrices = example.matrices() or matrices
        ids = {m.group(0).removeprefix('repro_') for m in CASE_ID.finditer(example.text)}
        if not ids:
            continue
        assert matrices, f'README.md:{example.line}: case ids {sorted(ids)} but no matrix named before them'
        missing = sorted(ids - frozenset().union(*map(_case_ids, matrices)))
        assert missing == [], f'README.md:{example.line}: not cases of {sorted(matrices)}: {missing}'
        checked += ids
    assert len(checked) >= 3


def test_a_wrong_case_id_is_caught():
    """The check above, on the id README had before vit.yaml's label was spelled into it."""
    assert 'vit_base_patch16_clip_224-open_clip-224x224-patch8-create' not in _case_ids('vit')
    assert 'vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create' in _case_ids('vit')


@pytest.mark.parametrize('subcommand', ['repro'])
def test_help_examples_name_real_case_ids(subcommand, capsys):
    """`harness repro --help` shows the walkthrough's case id, which vit.yaml has."""
    with pytest.raises(SystemExit):
        _parser().parse_args([subcommand, '--help'])
    ids = {m.group(0).removeprefix('repro_') for m in CASE_ID.finditer(capsys.readouterr().out)}
    assert ids and ids <= _case_ids('vit')
