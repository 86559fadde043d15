"""Load and validate a YAML matrix into plain dataclasses.

Everything that can be wrong with a matrix is found here, before any model is built: unknown keys, wrong
types, unknown models (with close matches), unknown origins, origins that do not fit a model's family and
sizes that a model cannot take. Each problem becomes one line of a :class:`MatrixError` that names the file,
the entry and what was expected.
"""
from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any

from harness.checkpoints.origins import FILE_ORIGIN
from harness.checkpoints.origins import origins as known_origins
from harness.checkpoints.vetting import checkpoint_file_problem
from harness.families import Target, family_of
from harness.image_tree import ImageTreeError, read_image_tree
from harness.spec.limits import (
    FORWARD_MEMORY_BUDGET,
    MAX_CASES,
    MAX_NUM_IMAGES,
    MAX_PROBLEMS_SHOWN,
    cut,
    forward_bytes,
    gib,
    shown,
)
from harness.spec.limits import is_int as _is_int
from harness.spec.matrix_file import MatrixFileError, name_problem, read_matrix_file
from harness.spec.matrix_models import ModelEntries, _native_geometry, _origin_problem
from harness.spec.matrix_settings import MatrixSettings
from harness.spec.model import (  # the data model, with the validator's users' names (harness.spec.matrix.X) kept
    AXES,
    Expectation,
    Matrix,
    ModelSpec,
    OriginSpec,
    Selection,
    Tolerances,
)
from harness.spec.vocabulary import PATHS, Size, Window
from harness.store.case_result import DEFAULT_STATE, STATES
from harness.timing.config import TimingConfig

__all__ = ['AXES', 'Expectation', 'Matrix', 'MatrixError', 'ModelSpec', 'OriginSpec', 'PATHS', 'Selection',
           'TimingConfig', 'Tolerances', 'load_matrix', 'structure_problems', 'window_value']


class MatrixError(ValueError):
    """A matrix that cannot run; ``str()`` lists every problem, one per line."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        shown_problems = [cut(p) for p in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown_problems.append(f'... and {len(problems) - MAX_PROBLEMS_SHOWN} more')
        self.shown_problems = shown_problems
        super().__init__(f'{self.path}: invalid matrix\n' + '\n'.join(f'  - {p}' for p in shown_problems))

    def one_line(self) -> str:
        """The problems on one line, for the command line's ``error:``."""
        return f'{self.path}: invalid matrix: ' + '; '.join(self.shown_problems)


TOP_LEVEL_KEYS = {
    'name': 'a string',
    'models': 'a list of model names, {name: ..., label: ..., <constructor overrides>, <own origins/sizes/...>, '
              'targets: auto or [trigger, ...]} or '
              '{pattern: GLOB, <overrides and axes shared by every match>} or '
              '{zoo: GLOB}: every architecture a family claims, in miniature, through its trigger set',
    'origins': 'a list of origin names or {file: PATH}', 'sizes': 'a list of sizes (int or [H, W])',
    'patch_sizes': 'a list of ints', 'window_sizes': 'a list of window sizes (int or [H, W])',
    'paths': f'a subset of {list(PATHS)}',
    'states': f'a list of model states from {list(STATES)} (default [{DEFAULT_STATE}])',
    'seed': 'an int', 'num_images': 'an int', 'tolerances': 'a mapping', 'timing': 'a mapping',
    'images': 'a folder of labelled images, <folder>/<class index or ImageNet synset>/<image>',
    'expect': 'a list of {match: {...}, checks: [...], reason: ...}',
}


# a required key and the keys that supply it (a trigger set stands for sizes); a model entry may set its own
REQUIRED_KEYS = {'name': ('name',), 'models': ('models',), 'origins': ('origins',),
                 'sizes': ('sizes', 'targets', 'zoo')}


def structure_problems(raw: dict) -> list[str]:
    """What is wrong with the matrix's top level in the YAML alone, with neither torch nor timm imported:
    unknown keys, and required keys that neither the matrix nor any of its model entries sets.
    :func:`load_matrix` reports each of these too (and more), so this is a quick first look, not a validation."""
    entries = raw.get('models') if isinstance(raw.get('models'), list) else []
    entry_keys = set().union(*(set(e) for e in entries if isinstance(e, dict))) & {*AXES, 'targets', 'zoo'}
    problems = [f'{key}: unknown key; expected one of {sorted(TOP_LEVEL_KEYS)}' for key in raw
                if key not in TOP_LEVEL_KEYS]
    problems += [f'{key}: missing; expected {TOP_LEVEL_KEYS[key]}' for key, own in REQUIRED_KEYS.items()
                 if key not in raw and not entry_keys & set(own)]
    return problems


def load_matrix(path: str | Path, known_models: list[str] | None = None,
                selection: Selection = Selection()) -> Matrix:
    """Read and validate ``path`` (the part of it ``selection`` takes); raise :class:`MatrixError` listing every
    problem found."""
    path = Path(path)
    try:
        raw = read_matrix_file(path)
    except MatrixFileError as e:
        raise MatrixError(path, [e.problem]) from None
    matrix = _Validator(path, raw, known_models, selection).matrix()
    _check_unique_cases(matrix)
    return matrix


def _check_unique_cases(matrix: Matrix) -> None:
    """Results and --resume key on case ids: a repeated entry (or two files with one name) must not collide.
    Counted first: at most :data:`~harness.spec.limits.MAX_CASES` are expanded."""
    from harness.spec.cases import expand, iter_cases  # cases builds on this module
    if sum(1 for _ in itertools.islice(iter_cases(matrix), MAX_CASES + 1)) > MAX_CASES:
        raise MatrixError(matrix.path, [f'cases: more than {MAX_CASES} cases (models x origins x sizes x patch sizes '
                                        f'x window sizes x paths); the limit is {MAX_CASES} (MAX_CASES): split the '
                                        f'matrix or run it in shards of several files'])
    repeated = [case_id for case_id, n in Counter(c.case_id for c in expand(matrix)).items() if n > 1]
    if repeated:
        raise MatrixError(matrix.path, [f'cases: {len(repeated)} case ids appear more than once (e.g. {repeated[0]!r});'
                                        ' remove repeated sizes/origins, or give files distinct names'])


class _Validator(ModelEntries, MatrixSettings):
    """Collects problems instead of stopping at the first, so a user fixes a matrix in one pass."""

    def __init__(self, path: Path, raw: dict, known_models: list[str] | None, selection: Selection = Selection()):
        self.path = path
        self.raw = raw
        self.known_models = known_models
        self.selection = selection
        self.problems: list[str] = []
        self.left_out: list[str] = []

    def error(self, where: str, message: str) -> None:
        self.problems.append(f'{where}: {message}')

    def matrix(self) -> Matrix:
        for key in self.raw:
            if key not in TOP_LEVEL_KEYS:
                self.error(key, f'unknown key; expected one of {sorted(TOP_LEVEL_KEYS)}')
        models = self._models()
        for key, own in REQUIRED_KEYS.items():
            if key not in self.raw and not (models and all(set(own) & set(dict(m.axes)) for m in models)) \
                    and not (set(own) & {'zoo'} and self._has_zoo()):
                self.error(key, f'missing; expected {TOP_LEVEL_KEYS[key]}')
        name = self.raw.get('name', self.path.stem)
        if not isinstance(name, str):
            self.error('name', f'expected a string, got {shown(name)}')
        elif name_problem(name):
            self.error('name', name_problem(name))
        axes = self._axes([m for m in models if 'origins' not in dict(m.axes)])
        for i, model in enumerate(models):
            merged = {**axes, **dict(model.axes)}
            if 'targets' in merged:   # derived from sizes the model takes (harness.spec.triggers)
                continue
            self._check_axes_apply(i, model, merged)
            where = f'models[{i}].sizes' if 'sizes' in dict(model.axes) else 'sizes'
            self._check_sizes_fit(where, model, merged['sizes'], merged['patch_sizes'])
        matrix = Matrix(
            name=str(name), path=str(self.path), models=tuple(models), **axes,
            seed=self._int('seed', 0), num_images=self._int('num_images', 4, minimum=1), images=self._images(),
            tolerances=self._tolerances(), timing=self._timing(),
            expect=tuple(self._expectations(models)), left_out=tuple(self.left_out), selection=self.selection,
        )
        if self.problems:
            raise MatrixError(self.path, self.problems)
        return matrix

    def _axes(self, models: list[ModelSpec]) -> dict[str, tuple]:
        """The case axes in ``self.raw``; ``models`` are the ones the origins must apply to."""
        return {
            'origins': tuple(self._origins(models)),
            'sizes': tuple(size for i, raw in enumerate(self._list('sizes'))
                           if (size := self._size(f'sizes[{i}]', raw))),
            'patch_sizes': tuple(self._ints('patch_sizes')) or (None,),
            'window_sizes': tuple(window for i, raw in enumerate(self._list('window_sizes'))
                                  if (window := self._window(f'window_sizes[{i}]', raw))) or (None,),
            'paths': self._paths(),
            'states': self._states(),
        }


    # --- generic shapes -------------------------------------------------------------------------------
    def _list(self, key: str) -> list:
        value = self.raw.get(key, [])
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f'expected {TOP_LEVEL_KEYS[key]}, got {shown(value)}')
            return []
        return value

    def _int(self, key: str, default: int, minimum: int = 0) -> int:
        value = self.raw.get(key, default)
        if not _is_int(value) or value < minimum:
            self.error(key, f'expected an int >= {minimum}, got {shown(value)}')
            return default
        return value

    def _ints(self, key: str) -> list[int]:
        values = []
        for i, v in enumerate(self._list(key)):
            if _is_int(v) and v > 0:
                values.append(v)
            else:
                self.error(f'{key}[{i}]', f'expected a positive int, got {shown(v)}')
        return values

    def _size(self, where: str, value: Any) -> Size | None:
        if _is_int(value) and value > 0:
            return value, value
        if isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value):
            return value[0], value[1]
        self.error(where, f'expected a positive int (square) or [H, W], got {shown(value)}')
        return None

    def _window(self, where: str, value: Any) -> Window | None:
        """A window size as cases carry it: an int when square ([7, 7] is 7), else (h, w)."""
        size = self._size(where, value)
        return None if size is None else window_value(size)


    # --- models, origins, paths -------------------------------------------------------------------------


    def _origins(self, models: list[ModelSpec]) -> list[OriginSpec]:
        origins = []
        for i, entry in enumerate(self._list('origins')):
            where = f'origins[{i}]'
            if isinstance(entry, dict) and 'file' in entry:
                origin = self._file_origin(where, entry)
            elif isinstance(entry, str) and entry in known_origins() and entry != FILE_ORIGIN:
                origin = OriginSpec(entry)
            else:
                self.error(where, f'unknown origin {shown(entry)}; expected one of {sorted(known_origins())} '
                                  f'or {{file: PATH}}')
                continue
            if origin is None:
                continue
            for model in models:
                problem = _origin_problem(origin, model)
                if problem:
                    self.error(where, problem)
            origins.append(origin)
        return origins

    def _file_origin(self, where: str, entry: dict) -> OriginSpec | None:
        unknown = set(entry) - {'file', 'num_classes', 'custom_load'}
        if unknown:
            self.error(where, f'unknown keys {sorted(unknown)}; expected file, num_classes, custom_load')
        file = Path(str(entry['file']))
        if not file.is_absolute():
            file = self.path.parent / file
        problem = checkpoint_file_problem(file, bool(entry.get('custom_load', False)))
        if problem:
            self.error(f'{where}.file', f'checkpoint file {str(file)!r} {problem}')
            return None
        num_classes = entry.get('num_classes')
        if num_classes is not None and (not _is_int(num_classes) or num_classes < 0):
            self.error(f'{where}.num_classes', f'expected an int >= 0, got {shown(num_classes)}')
            return None
        return OriginSpec(FILE_ORIGIN, file=str(file), num_classes=num_classes,
                          custom_load=bool(entry.get('custom_load', False)))

    def _images(self) -> str | None:
        """``images:``, a folder relative to the matrix file: the tree is read here, its labels are checked
        against the models' classes when the run starts (:mod:`harness.runtime.run_start`)."""
        value = self.raw.get('images')
        if value is None:
            return None
        if not isinstance(value, str):
            self.error('images', f'expected {TOP_LEVEL_KEYS["images"]}, got {shown(value)}')
            return None
        folder = Path(value) if Path(value).is_absolute() else self.path.parent / value
        try:
            read_image_tree(folder)
        except ImageTreeError as e:
            self.error('images', str(e))
            return None
        return str(folder)

    def _paths(self) -> tuple[str, ...]:
        if 'paths' not in self.raw:
            return PATHS
        paths = []
        for i, p in enumerate(self._list('paths')):
            if p in PATHS:
                paths.append(p)
            else:
                self.error(f'paths[{i}]', f'unknown path {shown(p)}; expected one of {list(PATHS)}')
        return tuple(paths)

    def _states(self) -> tuple[str, ...]:
        if 'states' not in self.raw:
            return (DEFAULT_STATE,)
        states, raw = [], self._list('states')
        for i, state in enumerate(raw):
            if state not in STATES:
                self.error(f'states[{i}]', f'unknown state {state!r}; expected one of {list(STATES)}')
            elif state in states:
                self.error(f'states[{i}]', f'{state!r} is listed twice')
            else:
                states.append(state)
        if raw == [] and isinstance(self.raw['states'], list):
            self.error('states', f'expected {TOP_LEVEL_KEYS["states"]}, got an empty list')
        return tuple(states)


    def _check_axes_apply(self, index: int, model: ModelSpec, axes: dict[str, tuple]) -> None:
        """A patch or window axis the model's family cannot apply is an error naming why, not a case dropped."""
        for axis in ('patch_sizes', 'window_sizes'):
            if axes[axis] == (None,):
                continue
            problem = family_of(model).axis_problem(axis, model)
            if problem:
                own = axis in dict(model.axes)
                fix = f'drop models[{index}].{axis}' if own else f'set {axis} per model entry instead'
                values = [_axis_value(v) for v in axes[axis]]
                self.error(f'models[{index}].{axis}' if own else axis,
                           f'{model.label}: {axis} {values} do not apply: {problem}; {fix}')

    def _check_sizes_fit(self, where: str, model: ModelSpec, sizes: tuple[Size, ...], patch_sizes: tuple) -> None:
        """An impossible size (one a model's patch grid cannot tile) is a matrix error, not a case failure."""
        family = family_of(model)
        for size in sizes:
            for patch in patch_sizes:
                problem = family.size_problem(model, size, patch) or self._memory_problem(family, model, size, patch)
                if problem:
                    self.error(f'{where} {list(size)}', f'{model.label}: {problem}')

    def _memory_problem(self, family, model: ModelSpec, size: Size, patch_size: int | None) -> str | None:
        """A size whose forward pass is estimated (:func:`harness.spec.limits.forward_bytes`, from the model's
        meta-device geometry) to need more than :data:`~harness.spec.limits.FORWARD_MEMORY_BUDGET`: refused before a
        tensor of that size is made."""
        images = self.raw.get('num_images')
        images = images if _is_int(images) and 1 <= images <= MAX_NUM_IMAGES else Matrix.num_images
        geometry = family.expected_geometry(_native_geometry(family, model), Target(size, patch_size))
        need = forward_bytes(geometry, family.attention, images)
        if need <= FORWARD_MEMORY_BUDGET:
            return None
        return (f'its forward pass of {images} images at {size[0]}x{size[1]} is estimated to need {gib(need)} '
                f'({geometry.grid_size[0]}x{geometry.grid_size[1]} cells, {family.attention} attention); the budget '
                f'is {gib(FORWARD_MEMORY_BUDGET)} (FORWARD_MEMORY_BUDGET)')


def _axis_value(value: Window) -> Any:
    """An axis value as the matrix spells it: an int, or [h, w]."""
    return list(value) if isinstance(value, tuple) else value


def window_value(size: Size) -> Window:
    """``(7, 7)`` as 7, ``(8, 12)`` as it is: one spelling per window, for case ids and expect matching."""
    return size[0] if size[0] == size[1] else (size[0], size[1])


