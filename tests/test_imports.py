"""No import circle among the harness's modules, counting imports inside functions: a circle means two modules
each need a fact of the other, and the fact belongs in a lower module both import."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / 'harness'


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The harness modules an import statement names (``from harness import x``: ``harness.x`` where that is a
    module, else ``harness``); relative imports are resolved against ``module``."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if not isinstance(node, ast.ImportFrom):
        return set()
    base = node.module or ''
    if node.level:
        package = module.split('.') if is_package else module.split('.')[:-1]
        package = package[:len(package) - node.level + 1]
        base = '.'.join(package + ([base] if base else []))
    names = {f'{base}.{alias.name}' for alias in node.names}
    return {name if name in known else base for name in names if name in known or base in known}


def import_graph() -> dict[str, set[str]]:
    """Every harness module -> the harness modules it imports anywhere (top level, in functions, under
    TYPE_CHECKING excepted: those are never executed)."""
    files = {module_name(p): p for p in PACKAGE.rglob('*.py')}
    known = set(files)
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = {id(n) for block in ast.walk(tree) if _type_checking(block) for n in ast.walk(block)}
        graph[module] = {target for node in ast.walk(tree) if id(node) not in skipped
                         for target in imported(node, module, path.name == '__init__.py', known)} - {module}
    return graph


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def circle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """One import circle through the component's first module, as a path that ends where it starts."""
    members, start = set(component), component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return paths[node] + [start]
            if target not in paths:
                paths[target] = paths[node] + [target]
                frontier.append(target)
    return component


def test_the_harness_has_no_import_circle():
    graph = import_graph()
    circles = [' -> '.join(circle_in(c, graph)) + f'  ({len(c)} modules: {", ".join(c)})' for c in cycles(graph)]
    assert not circles, 'import circles among harness modules:\n' + '\n'.join(circles)


def test_the_graph_sees_imports_inside_functions():
    """The check would pass vacuously if it missed the imports that hide in function bodies."""
    graph = import_graph()
    assert 'harness.runtime.items' in graph['harness.plugin']   # `from harness.runtime.items import ...`, in a hook
    assert 'harness.checkpoints.synthesize' in graph['harness.checkpoints.store']   # in _write_entry
    assert cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
