"""Carry harness code into a standalone script: functions and classes by their source, with what they need.

A repro script must run where only torch and timm are installed, yet its oracles should be the harness's own,
not a second copy that drifts. So the script is assembled from real functions (:mod:`harness.reference`, a
few of :mod:`harness.checks` and :mod:`harness.faults`, :mod:`harness.repro.steps`): :func:`carried` gives
their source together with every harness function, class and constant they use, and :func:`import_lines`
the imports the assembled text needs, refusing any name it cannot import from torch, timm, numpy,
safetensors or the standard library. Docstrings are cut to their first sentence, to keep scripts short.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import pprint
import re
import textwrap
import types
from typing import Any, Iterable

# every import a script may have; it gets those of them its code uses
ALLOWED_IMPORTS = """
import contextlib, copy, importlib, inspect, math, re, sys, tempfile, traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator
import numpy as np
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
"""
THIRD_PARTY = ('numpy', 'safetensors', 'timm', 'torch')
WIDTH = 116   # the width of a script's lines


class InlineError(RuntimeError):
    """Code that cannot be carried into a script: a name it uses is neither carried nor importable there."""


def carried(objects: Iterable[Any]) -> list[str]:
    """The source of ``objects`` and of the harness code they use: constants first, then classes, then
    functions, each once, in the order first needed."""
    seen: dict[str, Any] = {}
    for obj in objects:
        _collect(obj, seen)
    constants = [assignment(name, value) for name, value in seen.items()
                 if not callable(value) or isinstance(value, types.GenericAlias)]
    classes = [_source(obj) for obj in seen.values() if inspect.isclass(obj)]
    functions = [_source(obj) for obj in seen.values() if inspect.isfunction(obj)]
    return (['\n'.join(constants)] if constants else []) + classes + functions


def assignment(name: str, value: Any) -> str:
    """``NAME = value``, wrapped under its opening bracket when long."""
    indent = ' ' * (len(name) + 3)
    text = pprint.pformat(value, width=WIDTH - len(indent), compact=True).replace('\n', '\n' + indent)
    return f'{name} = {text}'


def import_lines(code: str) -> list[str]:
    """The import lines ``code`` needs, the standard library's, a blank line, then the others; InlineError for a
    name nothing defines or imports."""
    importable = _importable()
    free = _free_names(ast.parse(code)) - set(dir(builtins))
    unknown = sorted(free - set(importable))
    if unknown:
        raise InlineError(f'the script uses {", ".join(unknown)}, which it neither defines nor may import')
    modules = {importable[name][0]: name for name in free if importable[name][1] is None}   # import m [as name]
    from_imports: dict[str, list[str]] = {}                                                 # from m import names
    for name in sorted(n for n in free if importable[n][1] is not None):
        from_imports.setdefault(importable[name][0], []).append(name)
    lines = [(module, f'import {module}' + (f' as {name}' if name != module else ''))
             for module, name in sorted(modules.items())]
    lines += [(module, f'from {module} import {", ".join(names)}') for module, names in sorted(from_imports.items())]
    stdlib = [line for module, line in lines if module.split('.')[0] not in THIRD_PARTY]
    others = [line for module, line in lines if module.split('.')[0] in THIRD_PARTY]
    return stdlib + [''] * bool(stdlib and others) + others


def _importable() -> dict[str, tuple[str, str | None, str]]:
    """Each name :data:`ALLOWED_IMPORTS` binds: (module, the name imported from it or None, the name bound)."""
    bound = {}
    for node in ast.parse(ALLOWED_IMPORTS).body:
        for alias in node.names:
            name = alias.asname or alias.name
            bound[name] = (node.module, alias.name, name) if isinstance(node, ast.ImportFrom) else \
                (alias.name, None, name)
    return bound


def _collect(obj: Any, seen: dict[str, Any]) -> None:
    """Add ``obj`` and, depth first, the harness objects its source names (found in its module)."""
    name = obj.__name__
    if name in seen:
        if seen[name] is not obj:
            raise InlineError(f'{obj.__module__}.{name} and {getattr(seen[name], "__module__", "a constant")}.'
                              f'{name} would share one name in the script')
        return
    seen[name] = obj
    module_globals = vars(inspect.getmodule(obj))
    for used in sorted(_loaded(ast.parse(textwrap.dedent(inspect.getsource(obj))))):
        value = module_globals.get(used)
        if used in seen and _is_constant(value) and seen[used] != value:   # Size = tuple[int, int] twice is one
            raise InlineError(f'{obj.__module__}.{used} and another {used} would share one name in the script')
        if used in seen or value is None or inspect.ismodule(value):
            continue
        if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__.startswith('harness.'):
            _collect(value, seen)
        elif _is_constant(value):
            seen[used] = value


def _is_constant(value: Any) -> bool:
    """A value a script can spell: a string, number or bool, a tuple of them, or a type alias (``tuple[int, int]``)."""
    if isinstance(value, types.GenericAlias):
        return True
    if isinstance(value, tuple):
        return all(_is_constant(v) for v in value)
    return isinstance(value, (str, int, float, bool))


def _loaded(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _free_names(module: ast.Module) -> set[str]:
    """Names the code reads that nothing binds: neither the module, nor the function or class that reads them."""
    top = _module_names(module)
    free = set()
    for node in module.body:
        scoped = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        free |= _loaded(node) - (_bound(node) if scoped else set()) - top
    return free


def _module_names(module: ast.Module) -> set[str]:
    names = set()
    for node in module.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names


def _bound(scope: ast.AST) -> set[str]:
    """The names bound anywhere inside a function or class: assignments, arguments, nested definitions,
    imports, exception names."""
    names = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
    return names


def _source(obj: Any) -> str:
    """The object's source, dedented, its docstring cut to the first sentence."""
    source = textwrap.dedent(inspect.getsource(obj))
    node = ast.parse(source).body[0]
    doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) \
        and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str) else None
    if doc is None or doc.lineno == doc.end_lineno:
        return source.rstrip()
    lines = source.splitlines()
    indent = re.match(r'\s*', lines[doc.lineno - 1]).group(0)
    short = textwrap.wrap(f'"""{_first_sentence(doc.value.value)}"""', WIDTH, initial_indent=indent,
                          subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)
    return '\n'.join(lines[:doc.lineno - 1] + short + lines[doc.end_lineno:]).rstrip()


def _first_sentence(docstring: str) -> str:
    """The docstring's first sentence (its first paragraph when no sentence ends in it)."""
    paragraph = ' '.join(inspect.cleandoc(docstring).split('\n\n')[0].split())
    end = re.search(r'\.(\s|$)', paragraph)
    return paragraph[:end.start() + 1] if end else paragraph
