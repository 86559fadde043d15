"""Bounds on what a matrix file may ask for, checked before any work is done.

A matrix is read by ``harness run`` before torch or timm is imported, and every bound here is checked then, on
the YAML document and on the plain mapping it holds: the file's size and kind, how many values it expands to
(each use of an alias counts again: a 410-byte alias bomb expands to 387 million strings), how deep it nests,
how many entries a list or mapping holds, how long a value is, names and labels (a plain identifier set), pixels
per side, ``num_images``, ``seed`` and the tolerances' range. Each broken bound is one line naming the file, the
field and the limit (:class:`harness.spec.matrix_file.MatrixFileError`). Types and meaning (an unknown key, a size
that does not tile) are :mod:`harness.spec.matrix`'s to check; the one bound that needs a model, the estimated
forward memory of a case (:func:`forward_bytes`), is checked there too, from the model's meta-device geometry,
before anything is built.

Nothing here imports torch or timm.
"""
from __future__ import annotations

import math
import re
from typing import Any, Iterator

import yaml

MAX_MATRIX_BYTES = 1 << 20      # a matrix file: the largest shipped one is under 8 KiB
MAX_YAML_VALUES = 100_000       # values in the document once every alias is expanded
MAX_YAML_DEPTH = 32             # nesting of lists and mappings (the shipped matrices nest 4 deep)
MAX_ITEMS = 1_000               # entries in any one list or mapping: sizes, models, origins, expect, ...
MAX_TEXT_CHARS = 4_096          # characters in any one value (file paths and reasons are the longest)
MAX_IDENTIFIER_CHARS = 64       # a name or label (timm's longest model name has 39 characters)
MAX_SIDE = 4_096                # pixels per side of a size, and of a patch or window
MAX_NUM_IMAGES = 256            # images per case for the checks (the default is 4)
MAX_SEED = 2 ** 64 - 1          # the largest seed torch.Generator.manual_seed accepts
MAX_CASES = 100_000             # cases in one matrix (the shipped zoo has a few hundred)
FORWARD_MEMORY_BUDGET = 16 << 30   # bytes a case's forward pass may be estimated to need (forward_bytes)
BYTES_PER_VALUE = 4             # fp32, the checks' dtype
QUOTE_CHARS = 40                # characters of an offending value an error quotes
MAX_PROBLEM_CHARS = 400         # characters of one problem a matrix error shows
MAX_PROBLEMS_SHOWN = 30         # problems it shows, then how many more there are

IDENTIFIER = re.compile(r'[A-Za-z0-9_.-]+')
SIZE_KEYS = ('sizes', 'window_sizes', 'patch_sizes')              # the axes of a matrix or a model entry
OVERRIDE_SIZE_KEYS = ('img_size', 'window_size', 'patch_size')    # a model entry's constructor overrides


class BoundExceeded(Exception):
    """A bound the matrix breaks; ``str()`` is ``<field>: <problem>``."""


def shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`QUOTE_CHARS` characters: an error quotes a short prefix of what it refuses,
    never all of a 50 MB value (and never walks more than a few levels of a nested one)."""
    if isinstance(value, str) and len(value) > QUOTE_CHARS:
        return f'{value[:QUOTE_CHARS]!r}... ({len(value)} characters)'
    text = _REPR.repr(value)
    return text if len(text) <= QUOTE_CHARS else f'{text[:QUOTE_CHARS]}... ({_length(value)})'


def cut(problem: str) -> str:
    """One problem as an error shows it: at most :data:`MAX_PROBLEM_CHARS` characters (PyYAML's own messages
    quote what they stumbled on, an undefined alias of a megabyte included)."""
    return problem if len(problem) <= MAX_PROBLEM_CHARS else f'{problem[:MAX_PROBLEM_CHARS]}...'


def identifier_problem(text: str) -> str | None:
    """Why ``text`` cannot be a name or label, else None: names become folders (``reports/<name>``) and labels
    parts of case ids (``<label>/...``, which ``-k`` and pytest's ``::`` node ids split), so both stay plain."""
    if len(text) > MAX_IDENTIFIER_CHARS:
        return f'{len(text)} characters ({shown(text)}); the limit is {MAX_IDENTIFIER_CHARS} (MAX_IDENTIFIER_CHARS)'
    if not IDENTIFIER.fullmatch(text) or text.startswith('.') or '..' in text:
        return (f"expected a plain folder name: letters, digits, '_', '-' and '.', not starting with '.' and "
                f"without '..', got {shown(text)}")
    return None


def name_problem(name: str) -> str | None:
    """Why a matrix ``name`` cannot be used, else None: it becomes the folder ``reports/<name>``."""
    problem = identifier_problem(name)
    return f'{problem}; the name becomes the folder reports/<name>' if problem else None


def yaml11_float(text: str) -> float | str:
    """A string YAML 1.1 left unread as a number (``1e-3``, no dot) as its float, else the string."""
    try:
        return float(text)
    except ValueError:
        return text


# --- the YAML document, before any value is constructed -------------------------------------------------------
class BoundedComposer:
    """Mixin for a PyYAML loader: composing stops at the first list or mapping of more than :data:`MAX_ITEMS`
    entries, nesting deeper than :data:`MAX_YAML_DEPTH` or value longer than :data:`MAX_TEXT_CHARS`
    (:class:`BoundExceeded` naming the field), so no more of the file is parsed than that. PyYAML composes lazily:
    a 1 MiB list is refused after its 1,001st entry, not after parsing half a million."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound_path: list[str] = []   # where the node being composed is: ['models', '[3]', '.label']

    def compose_node(self, parent, index):
        container = ''.join(self.bound_path).lstrip('.') or 'top level'
        full = isinstance(index, int) and index >= MAX_ITEMS or \
            index is None and isinstance(parent, yaml.MappingNode) and len(parent.value) >= MAX_ITEMS
        if full:
            raise BoundExceeded(f'{container}: more than {MAX_ITEMS} entries; the limit is {MAX_ITEMS} per list or '
                                f'mapping (MAX_ITEMS)')
        if len(self.bound_path) >= MAX_YAML_DEPTH:
            raise BoundExceeded(f'{container}: nested more than {MAX_YAML_DEPTH} deep (MAX_YAML_DEPTH)')
        if isinstance(index, int):
            self.bound_path.append(f'[{index}]')
        elif isinstance(index, yaml.ScalarNode):   # a mapping's value, named by its key
            self.bound_path.append(f'.{index.value}' if len(index.value) <= QUOTE_CHARS else '.?')
        else:
            self.bound_path.append('')
        try:
            node = super().compose_node(parent, index)
            where = ''.join(self.bound_path).lstrip('.') or container
        finally:
            self.bound_path.pop()
        if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_TEXT_CHARS:
            raise BoundExceeded(f'{where}: a value of {len(node.value)} characters ({shown(node.value)}); the limit '
                                f'is {MAX_TEXT_CHARS} (MAX_TEXT_CHARS)')
        return node


def expansion_problem(root: yaml.Node) -> str | None:
    """Why the composed document cannot be constructed, else None: it refers to itself, or it expands to more
    than :data:`MAX_YAML_VALUES` values, each use of an alias counted again. Linear in the document's nodes: a
    shared node's expanded count is computed once. The bound also bounds the depth aliases can chain to (about
    450: n nested aliases expand to n * (n + 1) / 2 values), so this recursion stays within Python's limit."""
    try:
        _Expansion().count(root, '')
    except BoundExceeded as e:
        return str(e)
    return None


class _Expansion:
    def __init__(self):
        self.counted: dict[int, int] = {}   # id(node) -> values it expands to
        self.open: set[int] = set()         # the nodes being counted: an alias to one of them is recursion

    def count(self, node: yaml.Node, where: str) -> int:
        key = id(node)
        if key in self.counted:
            return self.counted[key]
        if key in self.open:
            raise BoundExceeded(f'{where or "top level"}: an alias refers to a value that holds it; a matrix cannot '
                                f'be recursive')
        total = 1
        if not isinstance(node, yaml.ScalarNode):
            self.open.add(key)
            for child, child_where in _children(node, where):
                total += self.count(child, child_where)
                if total > MAX_YAML_VALUES:
                    raise BoundExceeded(f'{where or "top level"}: expands to more than {MAX_YAML_VALUES} values '
                                        f'(each use of an alias counts its values again); the limit is '
                                        f'{MAX_YAML_VALUES} (MAX_YAML_VALUES)')
            self.open.discard(key)
        self.counted[key] = total
        return total


def _children(node: yaml.Node, where: str) -> Iterator[tuple[yaml.Node, str]]:
    if isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            yield child, f'{where}[{i}]'
        return
    for key, value in node.value:
        name = key.value if isinstance(key, yaml.ScalarNode) and len(key.value) <= QUOTE_CHARS else '?'
        yield key, f'{where}.{name}' if where else name
        yield value, f'{where}.{name}' if where else name


# --- the mapping the document holds ----------------------------------------------------------------------------
def fields_problem(raw: dict) -> str | None:
    """The first bound a matrix's fields break, else None: names and labels, pixels per side, ``num_images``,
    ``seed``, tolerances. A value of the wrong type is left to :mod:`harness.spec.matrix` to name."""
    checks = (_name_bounds, _model_bounds, _axes_bounds, _number_bounds, _tolerance_bounds)
    for check in checks:
        try:
            check(raw)
        except BoundExceeded as e:
            return str(e)
    return None


def _name_bounds(raw: dict) -> None:
    name = raw.get('name')
    if isinstance(name, str) and name_problem(name):
        raise BoundExceeded(f'name: {name_problem(name)}')


def _model_bounds(raw: dict) -> None:
    models = raw.get('models')
    for i, entry in enumerate(models if isinstance(models, list) else ()):
        where = f'models[{i}]'
        if isinstance(entry, str):
            entry = {'name': entry}
        if not isinstance(entry, dict):
            continue
        for key in ('name', 'label'):
            value = entry.get(key)
            if isinstance(value, str) and identifier_problem(value):
                raise BoundExceeded(f'{where}.{key}: {identifier_problem(value)}')
        pattern = entry.get('pattern')
        if isinstance(pattern, str) and len(pattern) > MAX_IDENTIFIER_CHARS:
            raise BoundExceeded(f'{where}.pattern: {len(pattern)} characters ({shown(pattern)}); the limit is '
                                f'{MAX_IDENTIFIER_CHARS} (MAX_IDENTIFIER_CHARS)')
        _axes_bounds(entry, f'{where}.')
        for key in OVERRIDE_SIZE_KEYS:
            _side_bounds(entry.get(key), f'{where}.{key}')


def _axes_bounds(raw: dict, prefix: str = '') -> None:
    for key in SIZE_KEYS:
        values = raw.get(key)
        for i, value in enumerate(values if isinstance(values, list) else ()):
            _side_bounds(value, f'{prefix}{key}[{i}]')


def _side_bounds(value: Any, where: str) -> None:
    """An int or a list of ints (pixels per side, or per stage), each at most :data:`MAX_SIDE`."""
    sides = value if isinstance(value, list) else [value]
    if any(is_int(side) and side > MAX_SIDE for side in sides):
        raise BoundExceeded(f'{where}: {shown(value)} exceeds {MAX_SIDE} pixels per side (MAX_SIDE)')


def _number_bounds(raw: dict) -> None:
    num_images = raw.get('num_images')
    if is_int(num_images) and num_images > MAX_NUM_IMAGES:
        raise BoundExceeded(f'num_images: {shown(num_images)} exceeds the limit of {MAX_NUM_IMAGES} images per case '
                            f'(MAX_NUM_IMAGES)')
    seed = raw.get('seed')
    if is_int(seed) and seed > MAX_SEED:
        raise BoundExceeded(f'seed: {shown(seed)} exceeds {MAX_SEED}, the largest seed torch accepts (MAX_SEED)')


def _tolerance_bounds(raw: dict) -> None:
    """Every tolerance finite and >= 0: a NaN limit fails every figure, a negative one every difference. (A
    minimum cosine above 1 fails every case too, but plainly: tests use it to force a failure.)"""
    section = raw.get('tolerances')
    if not isinstance(section, dict):
        return
    per_path = section.get('per_path')
    sections = [('tolerances', section)] + [(f'tolerances.per_path.{path}', limits)
                                            for path, limits in (per_path.items() if isinstance(per_path, dict) else ())
                                            if isinstance(limits, dict)]
    for where, limits in sections:
        for key, value in limits.items():
            number = yaml11_float(value) if isinstance(value, str) else value
            if key == 'per_path' or not is_number(number):
                continue
            if not (math.isfinite(number) and number >= 0):
                raise BoundExceeded(f'{where}.{key}: expected a finite number >= 0 (or null: report only), got '
                                    f'{shown(value)}')


# --- the one bound that needs a model --------------------------------------------------------------------------
def forward_bytes(geometry: Any, attention: str, images: int) -> int:
    """An estimate of the memory the checks' forward pass of ``images`` images takes at ``geometry`` (a
    :class:`harness.families.Geometry`), in bytes: ``4 B x images x cells x (embed_dim x blocks + span)``.

    ``cells`` are the positions of the model's widest feature map (its grid of patches; a CNN's first feature map),
    ``embed_dim x blocks`` the activations the checks keep (one per block: ``forward_intermediates``), ``span``
    the positions one position attends to (``attention``: ``global``, all cells; ``windows``, the largest window;
    ``none``, none). It leaves out heads, MLP widths and the weights: the forward pass needs at least this much."""
    height, width = geometry.img_size
    cells = _cells(geometry.grid_size)
    if geometry.stage_reductions:
        cells = max(cells, (height // geometry.stage_reductions[0]) * (width // geometry.stage_reductions[0]))
    windows = [*geometry.window_sizes, *(window for _, window in geometry.rel_pos_windows)]
    span = {'global': cells, 'windows': max(map(_cells, windows), default=cells), 'none': 0}[attention]
    blocks = max(1, sum(geometry.stage_depths))
    return BYTES_PER_VALUE * images * cells * (geometry.embed_dim * blocks + span)


def gib(size: int) -> str:
    return f'{size / (1 << 30):.1f} GiB'


def _cells(size: tuple[int, int]) -> int:
    return size[0] * size[1]


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _length(value: Any) -> str:
    if isinstance(value, str):
        return f'{len(value)} characters'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'{len(str(value))} digits'
    return type(value).__name__


def _bounded_repr():
    import reprlib
    bounded = reprlib.Repr()
    bounded.maxlevel, bounded.maxstring, bounded.maxother, bounded.maxlong = 3, QUOTE_CHARS + 10, QUOTE_CHARS + 10, 30
    for attribute in ('maxlist', 'maxtuple', 'maxdict', 'maxset', 'maxfrozenset'):
        setattr(bounded, attribute, 6)
    return bounded


_REPR = _bounded_repr()
