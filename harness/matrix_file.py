"""Read a matrix file into a plain mapping: the part of loading a matrix that needs neither torch nor timm.

``harness run`` calls this before importing timm (7-13 s), so a missing, binary or malformed file is reported
at once. Every problem is one line that names the file (and the line, where YAML knows it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class MatrixFileError(ValueError):
    """A matrix file that cannot be read as a YAML mapping; ``str()`` is ``<file>: <problem>``."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == 'tag:yaml.org,2002:merge':   # `<<: *defaults` then overriding keys is legitimate
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in first_line
            except TypeError:   # an unhashable key: SafeLoader's own error names it
                break
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f'duplicate key {key!r} (first at line {first_line[key] + 1}); '
                                f'each key may appear once per mapping', key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_matrix_file(path: Path) -> dict:
    """The top-level mapping of a matrix file; :class:`MatrixFileError` for anything that is not one."""
    if not path.exists():
        raise MatrixFileError(path, 'file not found')
    if path.is_dir():
        raise MatrixFileError(path, 'is a directory; expected a YAML matrix file such as matrices/smoke.yaml')
    try:
        text = path.read_bytes().decode('utf-8')
    except UnicodeDecodeError as e:
        raise MatrixFileError(path, f'not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); '
                                    f'expected a YAML matrix file') from None
    except OSError as e:
        raise MatrixFileError(path, f'cannot be read ({e.strerror}); expected a readable YAML matrix file') from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)   # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        raise MatrixFileError(path, f'not valid YAML{_at(e)}: {_yaml_problem(e)}') from None
    except yaml.reader.ReaderError as e:   # a control character: YAML text may not hold one
        raise MatrixFileError(path, f'not YAML text: control character #x{e.character:04x} at offset {e.position}; '
                                    f'expected a YAML matrix file') from None
    if not isinstance(raw, dict):
        raise MatrixFileError(path, f'expected a mapping at the top level, got {type(raw).__name__}')
    return raw


def name_problem(name: str) -> str | None:
    """Why a matrix ``name`` cannot be used, else None: it becomes the folder ``reports/<name>``, so it must
    stay a single plain folder name."""
    if not name or name.startswith('.') or any(sep in name for sep in ('/', '\\', '\0')):
        return (f"expected a plain folder name (no '/' or '\\', not empty, not starting with '.'), got {name!r}; "
                f"the name becomes the folder reports/<name>")
    return None


def _at(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    return f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's message without its ``in "<unicode string>", line N`` lines: the file and line are said once."""
    problem = error.problem or type(error).__name__
    return f'{problem} ({error.context})' if error.context else problem
