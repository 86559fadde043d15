"""Which models can execute a piece of timm's source: a static, over-inclusive call graph by names.

The nodes are timm's top-level functions, classes and module-level assignments, as (module, name). A node
points at every node whose name it mentions (a bare identifier, resolved to its own module's definition first,
then to what the module imports under that name, then to every module defining it). A mutant in a method
belongs to its class. A model can run the mutated code when its entrypoint (the ``@register_model`` function
of the same name) reaches the mutated node. Calls through strings or attributes of objects (``self.rope...``)
are not followed, but the classes that build those objects are named where the objects are made, so the
builder reaches them. Over-inclusion only costs time; it never hides a kill.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

Node = tuple[str, str]   # (module path relative to the package, e.g. 'layers/pos_embed.py', top-level name)


@dataclass
class _Module:
    defs: dict[str, tuple[int, int, set[str]]] = field(default_factory=dict)   # name: (first, last line, mentions)
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)          # alias: (module prefix, name)


class CallGraph:
    def __init__(self, package: Path):
        self.modules = {str(p.relative_to(package)): _parse(p, package) for p in sorted(package.rglob('*.py'))
                        if '__pycache__' not in p.parts}
        self.definers: dict[str, list[str]] = defaultdict(list)
        for module, parsed in self.modules.items():
            for name in parsed.defs:
                self.definers[name].append(module)
        self.callers: dict[Node, set[Node]] = defaultdict(set)
        for module, parsed in self.modules.items():
            for name, (_, _, mentions) in parsed.defs.items():
                for target in {t for word in mentions for t in self._resolve(module, word)}:
                    self.callers[target].add((module, name))

    def _resolve(self, module: str, word: str) -> list[Node]:
        parsed = self.modules[module]
        if word in parsed.defs:
            return [(module, word)]
        if word not in parsed.imports:
            return []
        prefix, name = parsed.imports[word]
        definers = self.definers.get(name, [])
        return [(m, name) for m in ([m for m in definers if m.startswith(prefix)] or definers)]

    def node_at(self, module: str, line: int) -> Node:
        for name, (first, last, _) in self.modules[module].defs.items():
            if first <= line <= last:
                return module, name
        raise LookupError(f'timm/{module}:{line} is not inside a top-level function, class or assignment')

    def reaching(self, node: Node) -> set[str]:
        """The top-level names (any module) from which ``node`` can be reached."""
        seen, todo = {node}, [node]
        while todo:
            for caller in self.callers.get(todo.pop(), ()):
                if caller not in seen:
                    seen.add(caller)
                    todo.append(caller)
        return {name for _, name in seen}


def _parse(path: Path, package: Path) -> _Module:
    parsed = _Module()
    tree = ast.parse(path.read_text(), filename=str(path))
    here = path.relative_to(package).parent
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            prefix = _import_prefix(here, node)
            for alias in node.names:
                parsed.imports[alias.asname or alias.name] = (prefix, alias.name)
        for name in _defined_names(node):
            mentions = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            parsed.defs[name] = (node.lineno, node.end_lineno, mentions - {name})
    return parsed


def _import_prefix(here: Path, node: ast.ImportFrom) -> str:
    """The package-relative path prefix an import refers to ('models/vision_transformer', 'layers/', '')."""
    if node.level:
        base = here
        for _ in range(node.level - 1):
            base = base.parent
        parts = [*base.parts, *(node.module.split('.') if node.module else [])]
    elif node.module and node.module.startswith('timm.'):
        parts = node.module.split('.')[1:]
    else:
        return ''
    return '/'.join(parts)


def _defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return [t.id for t in targets if isinstance(t, ast.Name)]
    return []
