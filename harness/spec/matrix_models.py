"""A matrix's model entries, validated: names (with close matches for a typo), ``pattern:`` and ``zoo:`` globs
expanded (a zoo architecture as its family runs it, :mod:`harness.spec.zoo`), ``timm:`` ranges, constructor
overrides built on the meta device, trigger sets expanded into source variants, and the origins each model can
come from.

Mixed into the matrix validator (:class:`harness.spec.matrix._Validator`), whose ``raw`` document, ``selection``,
``known_models``, ``error()``, ``left_out`` and generic readers (``_list``, ``_size``, ``_window``) these use.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import itertools
from typing import Any, Iterator

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from harness.checkpoints.origins import FILE_ORIGIN, origin_named, origins_of
from harness.families import family_of, unclaimed_reason
from harness.spec.limits import shown
from harness.spec.model import AXES, ModelSpec, OriginSpec
from harness.spec.vocabulary import PATHS


def _native_geometry(family, model: ModelSpec):
    from harness.families.base import native_geometry  # torch: not needed by structure_problems' callers
    return native_geometry(family, model)


class ModelEntries:
    def _model_axes(self, where: str, model: ModelSpec, entry: dict) -> tuple[tuple[str, Any], ...]:
        """Axes a model entry sets for itself, validated like the matrix's own, problems named by entry."""
        raw = {key: entry[key] for key in AXES if key in entry}
        child = type(self)(self.path, raw, self.known_models)
        axes = child._axes([model])
        self.problems += [f'{where}.{problem}' for problem in child.problems]
        return tuple((key, axes[key]) for key in raw)

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
        (:mod:`harness.spec.triggers`)."""
        if 'targets' not in entry:
            return [model]
        from harness.spec.triggers import NoTriggers, triggers
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
        axes = dict(model.axes)
        if source and 'origins' in axes:   # the entry's own origins: each must fit the variant too
            axes['origins'] = self._fitting_origins(f'{where}.targets ({label})', axes['origins'], spec)
            if not axes['origins']:
                return None
        return dataclasses.replace(spec, alias=label,
                                   axes=(*axes.items(), ('targets', tuple(dict.fromkeys(targets)))))

    def _fitting_origins(self, where: str, origins: tuple[OriginSpec, ...], spec: ModelSpec) -> tuple:
        """The origins whose layout can hold ``spec`` (a trigger's source variant); the others left out, with
        why (OpenAI CLIP records one square input resolution: no rectangular source)."""
        fitting = []
        for origin in origins:
            problem = _origin_problem(origin, spec) if origin.name != FILE_ORIGIN else None
            if problem:
                self.left_out.append(f'{where}: {problem}')
            else:
                fitting.append(origin)
        return tuple(fitting)

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
        models = self.raw.get('models')
        return isinstance(models, list) and any(isinstance(e, dict) and 'zoo' in e for e in models)

    def _zoo_entry(self, where: str, entry: dict) -> dict | None:
        """One zoo architecture as a model entry: its miniature (or real) configuration, its family's trigger set,
        the matrix's paths and origins its family takes; None (and left out, with why) when it does not run."""
        from harness.spec.zoo import zoo_choice, zoo_sizes
        choice = zoo_choice(entry['name'], self.selection.full_size)
        if choice.overrides is None:
            self.left_out.append(f'{where}: {choice.left_out}')
            return None
        family = family_of(entry['name'])
        fixed = not family.trigger_kinds   # a fixed-size model: one case, unsupported with the reason
        takes = {'paths': ('create',) if fixed else family.paths, 'origins': tuple(origins_of(family.name))}
        paths = [p for p in self.raw.get('paths', PATHS) if p in takes['paths']]
        spec = ModelSpec.of(entry['name'], choice.overrides)
        origins = [o for o in self.raw.get('origins') or [] if isinstance(o, str) and o in takes['origins']
                   and _origin_problem(OriginSpec(o), spec) is None]   # each layout that fits it
        if not paths or not origins:
            axis = 'origins' if paths else 'paths'
            self.left_out.append(f'{where}: the {family.name} family takes none of the matrix\'s {axis} '
                                 f'({", ".join(takes[axis])})')
            return None
        sizes = {'sizes': zoo_sizes(entry['name'])} if fixed else {'targets': 'auto'}
        return {'name': entry['name'], **choice.overrides, **sizes, 'paths': paths, 'origins': origins}

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
