"""A matrix's settings sections, validated: ``tolerances`` (numbers, or ``calibrated`` for the measured noise
floors), ``timing`` and ``expect`` (known failures, matched per case and timm release).

Mixed into the matrix validator (:class:`harness.spec.matrix._Validator`), whose ``raw`` document and ``error()``
these use.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from harness.spec.limits import is_int as _is_int
from harness.spec.limits import is_number as _is_number
from harness.spec.limits import shown
from harness.spec.limits import yaml11_float as _as_float
from harness.spec.model import Expectation, ModelSpec, Tolerances
from harness.spec.vocabulary import PATHS
from harness.store.case_result import CHECKS, DTYPES, PRECISIONS
from harness.timing.config import TimingConfig

EXPECT_MATCH_KEYS = ('model', 'label', 'origin', 'img_size', 'patch_size', 'window_size', 'path', 'state')


class MatrixSettings:
    def _tolerances(self) -> Tolerances:
        """The ``tolerances`` section: limits for every path, and ``per_path: {PATH: {limits}}``."""
        section = self.raw.get('tolerances') or {}
        if not isinstance(section, dict):
            return self._section('tolerances', Tolerances)
        child = type(self)(self.path, {'tolerances': {k: v for k, v in section.items() if k != 'per_path'}},
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
            child = type(self)(self.path, {'limits': limits}, self.known_models)
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
