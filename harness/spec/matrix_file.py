"""Read a matrix file into a plain mapping: the part of loading a matrix that needs neither torch nor timm.

``harness run`` calls this before importing timm (7-13 s), so a missing, binary or malformed file is reported
at once. Every problem is one line that names the file (and the line, where YAML knows it).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from harness.spec.limits import (
    MAX_MATRIX_BYTES,
    BoundedComposer,
    BoundExceeded,
    cut,
    expansion_problem,
    fields_problem,
    name_problem,  # noqa: F401 - where harness.commands and harness.spec.matrix import it
    shown,
)


class MatrixFileError(ValueError):
    """A matrix file that cannot be read as a YAML mapping; ``str()`` is ``<file>: <problem>``."""

    def __init__(self, path: Path | str, problem: str):
        self.path = str(path)
        self.problem = cut(problem)
        super().__init__(f'{self.path}: {self.problem}')


class _UniqueKeyLoader(BoundedComposer, yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML silently keeps the last), and composes
    within the bounds of :class:`harness.spec.limits.BoundedComposer`."""

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
                    None, None, f'duplicate key {shown(key)} (first at line {first_line[key] + 1}); '
                                f'each key may appear once per mapping', key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_matrix_file(path: Path) -> dict:
    """The top-level mapping of a matrix file; :class:`MatrixFileError` for anything that is not one, or that
    breaks a bound of :mod:`harness.spec.limits` (checked before a value is constructed, then on the mapping)."""
    text = _matrix_text(path)
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        problem = expansion_problem(root) if root is not None else None
        if problem:
            raise MatrixFileError(path, problem)
        raw = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        raise MatrixFileError(path, f'not valid YAML{_at(e)}: {_yaml_problem(e)}') from None
    except yaml.reader.ReaderError as e:   # a control character: YAML text may not hold one
        raise MatrixFileError(path, f'not YAML text: control character #x{e.character:04x} at offset {e.position}; '
                                    f'expected a YAML matrix file') from None
    except BoundExceeded as e:
        raise MatrixFileError(path, str(e)) from None
    finally:
        loader.dispose()
    if not isinstance(raw, dict):
        raise MatrixFileError(path, f'expected a mapping at the top level, got {type(raw).__name__}')
    problem = fields_problem(raw)
    if problem:
        raise MatrixFileError(path, problem)
    return raw


def _matrix_text(path: Path) -> str:
    """The file's text, read only once ``fstat`` shows a regular file within :data:`MAX_MATRIX_BYTES`, and then
    at most one byte more (a file that grows meanwhile is refused too): ``/dev/zero`` or a FIFO is never read.
    Opened without blocking, so a FIFO with no writer is refused rather than waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise MatrixFileError(path, 'file not found') from None
    except IsADirectoryError:
        raise MatrixFileError(path, _DIRECTORY) from None
    except OSError as e:
        raise MatrixFileError(path, _unreadable(e)) from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise MatrixFileError(path, _DIRECTORY)
        if not stat.S_ISREG(status.st_mode):
            raise MatrixFileError(path, 'is not a regular file (a device, FIFO or socket); expected a YAML matrix file')
        if status.st_size > MAX_MATRIX_BYTES:
            raise MatrixFileError(path, _too_big(f'{status.st_size} bytes'))
        data = _read_at_most(fd, MAX_MATRIX_BYTES + 1)
    except OSError as e:
        raise MatrixFileError(path, _unreadable(e)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_MATRIX_BYTES:
        raise MatrixFileError(path, _too_big(f'more than {MAX_MATRIX_BYTES} bytes'))
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise MatrixFileError(path, f'not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); '
                                    f'expected a YAML matrix file') from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b''.join(chunks)


_DIRECTORY = 'is a directory; expected a YAML matrix file such as matrices/smoke.yaml'


def _unreadable(error: OSError) -> str:
    return f'cannot be read ({error.strerror}); expected a readable YAML matrix file'


def _too_big(size: str) -> str:
    return f'{size}; the limit is {MAX_MATRIX_BYTES} bytes for a matrix file (MAX_MATRIX_BYTES)'


def _at(error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    return f' at line {mark.line + 1}, column {mark.column + 1}' if mark else ''


def _yaml_problem(error: yaml.MarkedYAMLError) -> str:
    """PyYAML's message without its ``in "<unicode string>", line N`` lines: the file and line are said once."""
    problem = error.problem or type(error).__name__
    return f'{problem} ({error.context})' if error.context else problem
