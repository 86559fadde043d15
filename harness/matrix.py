"""Load and validate a YAML matrix into plain dataclasses.

Everything that can be wrong with a matrix is found here, before any model is built: unknown keys, wrong
types, unknown models (with close matches), unknown origins, origins that do not fit a model's family and
sizes that a model cannot take. Each problem becomes one line of a :class:`MatrixError` that names the file,
the entry and what was expected.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from harness.checkpoints.origins import FILE_ORIGIN, origin_named, origins_of
from harness.checkpoints.origins import origins as known_origins
from harness.checkpoints.vetting import checkpoint_file_problem
from harness.families import Target, family_of, unclaimed_reason
from harness.image_tree import ImageTreeError, read_image_tree
from harness.limits import (
    FORWARD_MEMORY_BUDGET,
    MAX_CASES,
    MAX_NUM_IMAGES,
    MAX_PROBLEMS_SHOWN,
    cut,
    forward_bytes,
    gib,
    shown,
)
from harness.limits import is_int as _is_int
from harness.limits import is_number as _is_number
from harness.limits import yaml11_float as _as_float
from harness.matrix_file import MatrixFileError, name_problem, read_matrix_file
from harness.results import CHECKS, DEFAULT_STATE, DTYPES, PRECISIONS, STATES
from harness.spec import (  # the data model, with the validator's users' names (harness.matrix.X) kept
    AXES,
    Expectation,
    Matrix,
    ModelSpec,
    OriginSpec,
    Selection,
    Tolerances,
)
from harness.timing_config import TimingConfig
from harness.vocabulary import PATHS, Size, Window

EXPECT_MATCH_KEYS = ('model', 'label', 'origin', 'img_size', 'patch_size', 'window_size', 'path', 'state')


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


def _native_geometry(family, model: ModelSpec):
    from harness.families.base import native_geometry  # torch: not needed by structure_problems' callers
    return native_geometry(family, model)


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
    Counted first: at most :data:`~harness.limits.MAX_CASES` are expanded."""
    from harness.cases import expand, iter_cases  # cases builds on this module
    if sum(1 for _ in itertools.islice(iter_cases(matrix), MAX_CASES + 1)) > MAX_CASES:
        raise MatrixError(matrix.path, [f'cases: more than {MAX_CASES} cases (models x origins x sizes x patch sizes '
                                        f'x window sizes x paths); the limit is {MAX_CASES} (MAX_CASES): split the '
                                        f'matrix or run it in shards of several files'])
    repeated = [case_id for case_id, n in Counter(c.case_id for c in expand(matrix)).items() if n > 1]
    if repeated:
        raise MatrixError(matrix.path, [f'cases: {len(repeated)} case ids appear more than once (e.g. {repeated[0]!r});'
                                        ' remove repeated sizes/origins, or give files distinct names'])


class _Validator:
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
            if 'targets' in merged:   # derived from sizes the model takes (harness.triggers)
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

    def _model_axes(self, where: str, model: ModelSpec, entry: dict) -> tuple[tuple[str, Any], ...]:
        """Axes a model entry sets for itself, validated like the matrix's own, problems named by entry."""
        raw = {key: entry[key] for key in AXES if key in entry}
        child = _Validator(self.path, raw, self.known_models)
        axes = child._axes([model])
        self.problems += [f'{where}.{problem}' for problem in child.problems]
        return tuple((key, axes[key]) for key in raw)

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

    def _tolerances(self) -> Tolerances:
        """The ``tolerances`` section: limits for every path, and ``per_path: {PATH: {limits}}``."""
        section = self.raw.get('tolerances') or {}
        if not isinstance(section, dict):
            return self._section('tolerances', Tolerances)
        child = _Validator(self.path, {'tolerances': {k: v for k, v in section.items() if k != 'per_path'}},
                           self.known_models)
        every_path = child._section('tolerances', Tolerances)
        self.problems += child.problems
        by_path = section.get('per_path') or {}
        if not isinstance(by_path, dict):
            self.error('tolerances.per_path', f'expected a mapping of a path in {list(PATHS)} to limits, '
                                              f'got {shown(by_path)}')
            by_path = {}
        per_path = []
        for path, limits in by_path.items():
            if path not in PATHS:
                self.error(f'tolerances.per_path.{path}', f'unknown path; expected one of {list(PATHS)}')
                continue
            child = _Validator(self.path, {'limits': limits}, self.known_models)
            parsed = child._section('limits', Tolerances)
            self.problems += [problem.replace('limits', f'tolerances.per_path.{path}', 1) for problem in child.problems]
            given = limits if isinstance(limits, dict) else {}
            per_path.append((path, tuple((k, getattr(parsed, k)) for k in given
                                         if k in Tolerances.__dataclass_fields__ and k != 'per_path')))
        return dataclasses.replace(every_path, per_path=tuple(per_path))

    def _section(self, key: str, cls: type):
        value = self.raw.get(key) or {}
        if not isinstance(value, dict):
            self.error(key, f'expected a mapping, got {shown(value)}')
            return cls()
        defaults = cls()
        fields = cls.__dataclass_fields__
        kwargs = {}
        for k, v in value.items():
            if k not in fields:
                self.error(f'{key}.{k}', f'unknown key; expected one of {sorted(fields)}')
                continue
            default = getattr(defaults, k)
            if isinstance(v, str) and (isinstance(default, float) or default is None):
                v = _as_float(v)   # YAML 1.1 reads 1e-3 (no dot) as a string
            if not _same_kind(v, default):
                self.error(f'{key}.{k}', f'expected {_kind_name(default)}, got {shown(v)}')
                continue
            kwargs[k] = v
        return cls(**kwargs)

    # --- models, origins, paths -------------------------------------------------------------------------
    def _models(self) -> list[ModelSpec]:
        models, labels = [], {}
        zoo_index = itertools.count()
        for where, entry, pattern in self._model_entries():
            in_shard = 'zoo' not in entry or self.selection.deals(next(zoo_index))
            if not in_shard or not self.selection.names_hold(entry['name']) \
                    or not self._for_this_release(where, entry):
                continue
            from_zoo = 'zoo' in entry
            if from_zoo:
                entry = self._zoo_entry(where, entry)
                if entry is None:
                    continue
            entry_model = self._model(where, entry)
            if entry_model is None:
                continue
            for model in self._with_triggers(where, entry_model, entry):
                model = dataclasses.replace(model, zoo=from_zoo)
                if model.label in labels:
                    fix = 'narrow the pattern or drop the other entry' if pattern else \
                        'give one of them a distinct `label:`'
                    self.error(where, f'{model.label!r} is already {labels[model.label]}; {fix}')
                    continue
                labels[model.label] = where
                models.append(model)
        return models

    def _with_triggers(self, where: str, model: ModelSpec, entry: dict) -> list[ModelSpec]:
        """The entry's model, or with ``targets:`` the entries its trigger set expands into: one per source
        configuration the triggers need (labelled ``<label>-<variant>``), each with its targets as its case axis
        (:mod:`harness.triggers`)."""
        if 'targets' not in entry:
            return [model]
        from harness.triggers import NoTriggers, triggers
        value, family = entry['targets'], family_of(model)
        kinds = None if value == 'auto' else value
        if kinds is not None and (not isinstance(kinds, list) or not kinds
                                  or not all(isinstance(k, str) for k in kinds)):
            self.error(f'{where}.targets', f'expected auto or a list of trigger names from {list(family.trigger_kinds)}'
                                           f' ({family.name} family), got {shown(value)}')
            return []
        replaced = [key for key in ('sizes', 'patch_sizes', 'window_sizes') if key in entry]
        if replaced:
            self.error(f'{where}.targets', f'the trigger set replaces {", ".join(replaced)}; drop '
                                           f'{"them" if len(replaced) > 1 else "it"} or drop targets')
            return []
        try:
            found = triggers(family, model, tuple(kinds) if kinds else None)
        except NoTriggers as e:
            self.error(f'{where}.targets', f'{model.label}: {e}')
            return []
        for kind in kinds or family.trigger_kinds:
            if not any(t.target.kind == kind for t in found):
                self.left_out.append(f'{where}.targets ({model.label}): no {kind} target fits its geometry')
        variants: dict[tuple[str, tuple], list] = {}
        for trigger in found:
            variants.setdefault((trigger.variant, trigger.source), []).append(trigger.target)
        return [spec for (name, source), targets in variants.items()
                if (spec := self._trigger_variant(where, model, name, source, targets))]

    def _trigger_variant(self, where: str, model: ModelSpec, name: str, source: tuple,
                         targets: list) -> ModelSpec | None:
        """The model entry of one source variant of a trigger set (``source``: the overrides it adds, named
        ``name``), its ``targets`` as its case axis."""
        spec = ModelSpec.of(model.name, {**model.kwargs, **dict(source)}) if source else \
            dataclasses.replace(model, alias=None, axes=())
        if source:
            try:
                _native_geometry(family_of(model), spec)
            except Exception as e:   # noqa: BLE001 - the variant is the harness's, its failure the release's
                self.error(f'{where}.targets', f'timm cannot build the {name} variant of {model.label} '
                                               f'({dict(source)}): {type(e).__name__}: {e}')
                return None
        label = f'{model.label}-{name}' if name else model.alias
        return dataclasses.replace(spec, alias=label, axes=(*model.axes, ('targets', tuple(dict.fromkeys(targets)))))

    def _model_entries(self) -> Iterator[tuple[str, dict, str | None]]:
        """(where, entry, the pattern it came from) for each model: a ``{pattern: GLOB, ...}`` or ``{zoo: GLOB}``
        entry expanded into one entry per matching timm model (named in problems as ``models[i] (name)``; a zoo
        entry's keep ``zoo: True``), after the explicit entries, so that an overlap is reported against the
        pattern."""
        patterns = []
        for i, entry in enumerate(self._list('models')):
            where = f'models[{i}]'
            if isinstance(entry, str):
                entry = {'name': entry}
            glob_key = next((key for key in ('pattern', 'zoo') if isinstance(entry, dict) and key in entry), None)
            if glob_key and isinstance(entry[glob_key], str) and 'name' not in entry:
                patterns.append((where, entry, glob_key))
            elif not isinstance(entry, dict) or not isinstance(entry.get('name'), str):
                self.error(where, f'expected a model name, a mapping with a string "name", or {{pattern: "swinv2_*", '
                                  f'...}} or {{zoo: "*"}}; got {shown(entry)}')
            else:
                yield where, entry, None
        for where, entry, glob_key in patterns:
            if not self._for_this_release(where, entry) or not self._glob_entry_fits(where, entry, glob_key):
                continue
            names = fnmatch.filter(self._known_models(), entry[glob_key])
            if not names:
                self.error(f'{where}.{glob_key}', f'{shown(entry[glob_key])} matches no timm model')
            shared = {k: v for k, v in entry.items() if k != glob_key}
            for name in names:
                yield f'{where} ({name})', {'name': name, **shared, **({'zoo': True} if glob_key == 'zoo' else {})}, \
                    entry[glob_key]

    def _glob_entry_fits(self, where: str, entry: dict, glob_key: str) -> bool:
        """A pattern entry names its models by their timm names; a zoo entry takes nothing but the glob (and
        ``timm:``): each architecture's family decides the rest."""
        if 'label' in entry:
            self.error(f'{where}.label', f'a {glob_key} entry names its models by their timm names; drop `label:`')
            return False
        extra = sorted(set(entry) - {'zoo', 'timm'}) if glob_key == 'zoo' else []
        if extra:
            self.error(f'{where}.{extra[0]}', 'a zoo entry takes only `zoo: GLOB` (and `timm:`): each '
                                              'architecture\'s family chooses its configuration, sizes and paths; '
                                              'use {pattern: GLOB, ...} to choose them yourself')
            return False
        return True

    def _has_zoo(self) -> bool:
        return any(isinstance(e, dict) and 'zoo' in e for e in self.raw.get('models') or [] if isinstance(e, dict))

    def _zoo_entry(self, where: str, entry: dict) -> dict | None:
        """One zoo architecture as a model entry: its miniature (or real) configuration, its family's trigger set,
        the matrix's paths and origins its family takes; None (and left out, with why) when it does not run."""
        from harness.zoo import zoo_choice, zoo_sizes
        choice = zoo_choice(entry['name'], self.selection.full_size)
        if choice.overrides is None:
            self.left_out.append(f'{where}: {choice.left_out}')
            return None
        family = family_of(entry['name'])
        if not family.trigger_kinds:   # a fixed-size model: one case, unsupported with the reason
            return {'name': entry['name'], 'sizes': zoo_sizes(entry['name']), 'paths': ['create']}
        takes = {'paths': family.paths, 'origins': tuple(origins_of(family.name))}
        paths = [p for p in self.raw.get('paths', PATHS) if p in takes['paths']]
        spec = ModelSpec.of(entry['name'], choice.overrides)
        origins = [o for o in self.raw.get('origins') or [] if isinstance(o, str) and o in takes['origins']
                   and _origin_problem(OriginSpec(o), spec) is None]   # each layout that fits it
        if not paths or not origins:
            axis = 'origins' if paths else 'paths'
            self.left_out.append(f'{where}: the {family.name} family takes none of the matrix\'s {axis} '
                                 f'({", ".join(takes[axis])})')
            return None
        return {'name': entry['name'], **choice.overrides, 'targets': 'auto', 'paths': paths, 'origins': origins}

    def _known_models(self) -> list[str]:
        if self.known_models is None:
            import timm
            self.known_models = timm.list_models()
        return self.known_models

    def _for_this_release(self, where: str, entry: dict) -> bool:
        """Whether the installed timm is in the entry's ``timm:`` range (no range: every release). An entry
        outside it is left out before anything else is asked of it: the release may not have the model."""
        if 'timm' not in entry:
            return True
        try:
            spec = SpecifierSet(str(entry['timm']))
        except InvalidSpecifier:
            self.error(f'{where}.timm', f'expected a version specifier such as ">=1.0.20", got {shown(entry["timm"])}')
            return False
        import timm
        if spec.contains(timm.__version__, prereleases=True):
            return True
        name = entry.get('name') or entry.get('pattern')
        self.left_out.append(f'{where} ({name}): timm {timm.__version__} is not {spec}')
        return False

    def _model(self, where: str, entry: dict) -> ModelSpec | None:
        """One model entry as a spec (its own axes included), or None after saying what is wrong with it."""
        name = entry['name']
        if self.known_models is not None and name not in self.known_models:
            close = difflib.get_close_matches(name, self.known_models, n=3, cutoff=0.6)
            hint = f'; did you mean {", ".join(close)}?' if close else ''
            self.error(where, f'unknown timm model {shown(name)}{hint}')
            return None
        if family_of(name) is None:
            self.error(where, f'{shown(name)} is in no family the harness supports: {unclaimed_reason(name)} '
                              f'(harness coverage lists every architecture)')
            return None
        alias = entry.get('label')
        if alias is not None and not isinstance(alias, str):
            self.error(f'{where}.label', f'expected a string, got {shown(alias)}')
            return None
        overrides = {k: v for k, v in entry.items() if k not in ('name', 'label', 'timm', 'targets') and k not in AXES}
        if 'img_size' in overrides:
            # validated; an int stays an int (EfficientVitMsra before timm 1.0.31 takes nothing else)
            size = self._size(f'{where}.img_size', overrides['img_size'])
            if size and not isinstance(overrides['img_size'], int):
                overrides['img_size'] = list(size)
        model = ModelSpec.of(name, overrides)
        if family_of(model) is None:   # its overrides build a class of no family (e.g. use_naflex)
            self.error(where, f'{name!r} with {dict(model.overrides)} is in no family the harness supports: '
                              f'{unclaimed_reason(model)}')
            return None
        try:
            _native_geometry(family_of(model), model)
        except Exception as e:   # noqa: BLE001 - any constructor complaint is the user's to fix
            self.error(where, f'timm cannot build {name} with {dict(model.overrides)}: {type(e).__name__}: {e}')
            return None
        return dataclasses.replace(model, alias=alias, axes=self._model_axes(where, model, entry))

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
        against the models' classes when the run starts (:mod:`harness.run_start`)."""
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

    def _timing(self) -> TimingConfig:
        """The `timing:` section, each key checked against what it accepts (null: the device's default)."""
        section = self.raw.get('timing') or {}
        if not isinstance(section, dict):
            self.error('timing', f'expected a mapping, got {shown(section)}')
            return TimingConfig()
        expected = {
            'enabled': ('true or false', lambda v: isinstance(v, bool)),
            'batch_size': ('an int >= 1 or null', lambda v: v is None or (_is_int(v) and v >= 1)),
            'dtype': (f'one of {list(DTYPES)}', lambda v: v in DTYPES),
            'precision': (f'one of {list(PRECISIONS)} (how a reduced dtype is applied: autocast, or weights and '
                          f'inputs cast)', lambda v: v in PRECISIONS),
            'compile': ('true or false', lambda v: isinstance(v, bool)),
            'channels_last': ('true or false', lambda v: isinstance(v, bool)),
            'warmup': ('an int >= 0', lambda v: _is_int(v) and v >= 0),
            'budget_s': ('a number of seconds >= 0 or null', lambda v: v is None or (_is_number(v) and v >= 0)),
            'min_repeats': ('an int >= 1', lambda v: _is_int(v) and v >= 1),
            'median_rse': ('a fraction >= 0 and < 1 (0.02: stop once the median is known to 2%; 0: fill the '
                           'budget) or null', lambda v: v is None or (_is_number(v) and 0 <= v < 1)),
            'max_cv': ('a fraction > 0 (0.05: passes whose std / mean exceeds 5% are not stable)',
                       lambda v: _is_number(v) and v > 0),
            'threads': ("an int >= 1 (torch's intra-op threads per worker) or null",
                        lambda v: v is None or (_is_int(v) and v >= 1)),
        }
        accepted = {}
        for key, value in section.items():
            if key not in expected:
                hint = '; timed passes now follow budget_s and min_repeats' if key == 'repeats' else ''
                self.error(f'timing.{key}', f'unknown key; expected one of {sorted(expected)}{hint}')
                continue
            if key in ('budget_s', 'median_rse', 'max_cv', 'precision') and isinstance(value, str):
                value = _as_float(value)   # YAML 1.1 reads 1e1 (no dot) as a string
            if key == 'precision' and _is_number(value):   # the key's meaning before issue 9
                self.error('timing.precision', f'expected one of {list(PRECISIONS)}, got {shown(value)}: the fraction '
                                               f'that ends timing is now timing.median_rse '
                                               f'(median_rse: {shown(value)})')
                continue
            what, accepts = expected[key]
            if accepts(value):
                accepted[key] = value
            else:
                self.error(f'timing.{key}', f'expected {what}, got {shown(value)}')
        return TimingConfig(**accepted)

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
        """A size whose forward pass is estimated (:func:`harness.limits.forward_bytes`, from the model's
        meta-device geometry) to need more than :data:`~harness.limits.FORWARD_MEMORY_BUDGET`: refused before a
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

    def _expectations(self, models: list[ModelSpec]) -> list[Expectation]:
        expectations = []
        names, labels = {m.name for m in models}, {m.label for m in models}
        for i, entry in enumerate(self._list('expect')):
            where = f'expect[{i}]'
            if not isinstance(entry, dict) or not isinstance(entry.get('match'), dict) \
                    or not isinstance(entry.get('reason'), str):
                self.error(where, 'expected {match: {field: value, ...}, checks: [parity, ...], reason: "...", '
                                  'timm: "<1.0.3" (optional)}')
                continue
            unknown = set(entry) - {'match', 'checks', 'reason', 'timm'}
            if unknown:
                self.error(where, f'unknown keys {sorted(unknown)}; expected match, checks, reason, timm')
            checks = self._expected_checks(where, entry.get('checks'))
            match = {}
            for k, v in entry['match'].items():
                if k not in EXPECT_MATCH_KEYS:
                    self.error(f'{where}.match.{k}', f'unknown field; expected one of {list(EXPECT_MATCH_KEYS)}')
                elif k == 'img_size':
                    match[k] = self._size(f'{where}.match.img_size', v)
                elif k == 'window_size':
                    match[k] = self._window(f'{where}.match.window_size', v)
                elif k in ('model', 'label') and v not in (names if k == 'model' else labels):
                    # an entry that names no model of the matrix would silently never match
                    hint = ' (that is a label: match it with `label:`)' if k == 'model' and v in labels else ''
                    self.error(f'{where}.match.{k}', f'{shown(v)} is no {"timm model" if k == "model" else "label"} of '
                                                     f'this matrix{hint}; expected one of '
                                                     f'{sorted(names if k == "model" else labels)}')
                else:
                    match[k] = v
            spec = None
            if 'timm' in entry:
                try:
                    spec = SpecifierSet(str(entry['timm']))
                except InvalidSpecifier:
                    self.error(f'{where}.timm', f'expected a version specifier such as "<1.0.3", '
                                                f'got {shown(entry["timm"])}')
            expectations.append(Expectation(tuple(sorted(match.items())), entry['reason'], checks, spec))
        return expectations

    def _expected_checks(self, where: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not value or any(v not in CHECKS for v in value):
            self.error(f'{where}.checks', f'expected a non-empty list of the checks the cases fail, from '
                                          f'{list(CHECKS)}; got {shown(value)}')
            return ()
        return tuple(value)


def _origin_problem(origin: OriginSpec, model: ModelSpec) -> str | None:
    """Why a model cannot come from an origin: another family's origin, or a file layout with no place for
    the model's tensors (found on a meta-device build, before anything is synthesized)."""
    family = family_of(model)
    if not origin_named(origin.name).applies_to(family.name):
        return (f'origin {origin.name!r} does not apply to {model.name!r} '
                f'({family.name} family; its origins are {origins_of(family.name)})')
    from harness.families.base import meta_model
    problem = origin_named(origin.name).layout_problem(meta_model(model))
    if problem:
        return f'the {origin.name} layout does not fit {model.label}: {problem}'
    return None


def _axis_value(value: Window) -> Any:
    """An axis value as the matrix spells it: an int, or [h, w]."""
    return list(value) if isinstance(value, tuple) else value


def window_value(size: Size) -> Window:
    """``(7, 7)`` as 7, ``(8, 12)`` as it is: one spelling per window, for case ids and expect matching."""
    return size[0] if size[0] == size[1] else (size[0], size[1])


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float) or default is None:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)) or value is None
    return isinstance(value, type(default))


def _kind_name(default: Any) -> str:
    if isinstance(default, bool):
        return 'true or false'
    if isinstance(default, int):
        return 'an int'
    if isinstance(default, float) or default is None:
        return 'a number (or null)'
    return f'a {type(default).__name__}'
