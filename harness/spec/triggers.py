"""Trigger sets: the geometry changes that exercise a family's resize code, derived from a model's own geometry.

A matrix entry with ``targets: auto`` (or ``targets: [transposed, img_pad, ...]``) gets, instead of the matrix's
sizes, the targets its family declares (``Family.trigger_kinds``), each from the source configuration that makes
it a trigger: a rectangular grid loaded into its transpose needs a rectangular checkpoint, a padded input needs a
model built with ``dynamic_img_pad``. :func:`triggers` lists them for one model, deterministically; the matrix
validator (:mod:`harness.spec.matrix`) turns each source variant into a model entry of its own, labelled
``<label>-<variant>``, whose case axis is the list of its :class:`TriggerTarget`.

Sizes are derived from the model's meta-device build (:func:`~harness.families.base.native_geometry`) in whole
steps of its stride (patch size times downsampling), each the nearest the family can take
(``Family.size_problem``) at or beyond the wanted size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.families import Geometry, Size, Target
from harness.families.base import Family, native_geometry
from harness.spec.vocabulary import PATHS

if TYPE_CHECKING:
    from harness.spec.model import ModelSpec

STATIC_PATHS = tuple(path for path in PATHS if path != 'dynamic')   # dynamic_img_size cannot change a patch
                                                                     # or a window

# kind -> what it exercises; README's "Trigger sets" table is this list
KINDS = {
    'larger': 'square (own) source to a larger square size: every resample upwards',
    'smaller': 'own source to a smaller size: resampling downwards, windows clamped by small feature maps',
    'rectangular': 'square source to a rectangular size: a resample per axis',
    'square': 'rectangular source (variant srcHxW) to a square size: a non-square source grid read as it is',
    'transposed': 'rectangular source (variant srcHxW) to its transpose, the token count unchanged: a resample '
                  'skipped because the length did not change',
    'patch': 'own size at half the patch size: the patch-embedding kernel resampled (FlexiViT)',
    'window': 'own size at half the window: relative-position tables resampled',
    'window_rect': 'own size at a rectangular window (half the window high, the window wide)',
    'window_per_stage': 'a source with one window per stage (variant windowsA-B-..) to a larger size',
    'window_rect_source': 'a source with a rectangular window (variant windowHxW: half the window high, the window '
                          'wide) at its own size to the transposed window and to the square window of its height',
    'img_pad': 'a source built with dynamic_img_pad (variant pad) to a size no patch divides: padded right and '
               'bottom to ceil(size / patch) patches',
}


@dataclass(frozen=True)
class TriggerTarget:
    """One target of a trigger set and the paths that can reach it (a patch or window change: no dynamic)."""
    kind: str
    target: Target
    paths: tuple[str, ...] = PATHS


@dataclass(frozen=True)
class Trigger:
    """A trigger: its target, and the source configuration it needs beyond the entry's own (``variant`` names
    it in labels; '' for the entry's own configuration)."""
    variant: str
    source: tuple[tuple[str, Any], ...]
    target: TriggerTarget


class NoTriggers(ValueError):
    """A model whose family declares no triggers, or a kind it does not declare; the message says which."""


def triggers(family: Family, model: 'ModelSpec', kinds: tuple[str, ...] | None = None) -> list[Trigger]:
    """The triggers of ``model`` of the ``kinds`` asked for (None: every kind its family declares), in the order
    of ``KINDS``; a kind whose sizes the model cannot take gives none (the validator says so)."""
    declared = family.trigger_kinds
    if not declared:
        raise NoTriggers(f'the {family.name} family declares no triggers (nothing of it is resampled); '
                         f'give sizes instead')
    unknown = [kind for kind in (kinds or ()) if kind not in declared]
    if unknown:
        raise NoTriggers(f'{", ".join(map(repr, unknown))} not among the {family.name} family\'s triggers '
                         f'{list(declared)}')
    chosen = [kind for kind in KINDS if kind in (kinds or declared)]
    source = native_geometry(family, model)
    out = []
    for kind in chosen:
        out += _KIND_BUILDERS[kind](_Sizes(family, model, source))
    return out


@dataclass(frozen=True)
class _Sizes:
    """Sizes derived from one model's geometry, in whole strides, each one the family takes."""
    family: Family
    model: 'ModelSpec'
    geometry: Geometry

    @property
    def own(self) -> Size:
        return self.geometry.img_size

    @property
    def step(self) -> Size:
        down = self.family.total_downsample(self.geometry)
        return self.geometry.patch_size[0] * down, self.geometry.patch_size[1] * down

    def fit(self, want: tuple[float, float], model: 'ModelSpec | None' = None, patch: int | None = None,
            upwards: bool = True) -> Size | None:
        """The size nearest ``want`` (at or beyond it in the direction asked) in whole steps that the model
        takes, searched over a few steps; None if none is found."""
        step = self.step
        start = [math.ceil(w / s) if upwards else max(1, math.floor(w / s)) for w, s in zip(want, step)]
        for k in range(6):
            sides = [(n + k if upwards else n - k) for n in start]
            if min(sides) < 1:
                return None
            size = (sides[0] * step[0], sides[1] * step[1])
            if self.family.size_problem(model or self.model, size, patch) is None:
                return size
        return None


def _larger(s: _Sizes) -> list[Trigger]:
    h, w = s.own
    size = s.fit((max(h * 1.5, h + 1), max(w * 1.5, w + 1)))
    return _own('larger', size)


def _smaller(s: _Sizes) -> list[Trigger]:
    h, w = s.own
    size = s.fit((h * 2 / 3, w * 2 / 3), upwards=False)
    return _own('smaller', size if size and size[0] < h and size[1] < w else None)


def _rectangular(s: _Sizes) -> list[Trigger]:
    h, w = s.own
    return _own('rectangular', s.fit((h, max(w * 1.5, w + 1))))


def _rect_source(s: _Sizes) -> tuple[str, tuple[tuple[str, Any], ...], 'ModelSpec', Size] | None:
    """The entry's own configuration when it is rectangular, else a rectangular variant of it (wider by half)."""
    h, w = s.own
    if h != w:
        return '', (), s.model, (h, w)
    size = s.fit((h, max(w * 1.5, w + 1)))
    if size is None:
        return None
    from harness.spec.model import ModelSpec
    changes = s.family.sized_source(size, s.geometry)
    overrides = tuple((key, tuple(value)) for key, value in changes.items())
    model = ModelSpec.of(s.model.name, {**s.model.kwargs, **{key: list(value) for key, value in changes.items()}})
    return f'src{size[0]}x{size[1]}', overrides, model, size


def _transposed(s: _Sizes) -> list[Trigger]:
    found = _rect_source(s)
    if found is None:
        return []
    variant, overrides, model, (h, w) = found
    if s.family.size_problem(model, (w, h), None):
        return []
    return [Trigger(variant, overrides, TriggerTarget('transposed', Target((w, h))))]


def _square(s: _Sizes) -> list[Trigger]:
    found = _rect_source(s)
    if found is None:
        return []
    variant, overrides, model, (h, w) = found
    side = max(h, w)
    size = s.fit((side, side), model=model)
    return [Trigger(variant, overrides, TriggerTarget('square', Target(size)))] if size else []


def _patch(s: _Sizes) -> list[Trigger]:
    p = s.geometry.patch_size[0]
    if p % 2 or p < 4 or s.family.size_problem(s.model, s.own, p // 2):
        return []
    return [Trigger('', (), TriggerTarget('patch', Target(s.own, patch_size=p // 2), STATIC_PATHS))]


def _explicit_window(s: _Sizes) -> Size | None:
    """The window the model is configured with for every stage (None: by ratio or one per stage)."""
    config = s.geometry.window_config
    if s.geometry.window_ratio is not None or not config or len(set(config)) != 1:
        return None
    return config[0]


def _window(s: _Sizes) -> list[Trigger]:
    window = _explicit_window(s)
    if window is None or min(window) < 2:
        return []
    half = (window[0] // 2, window[1] // 2)
    target = half[0] if half[0] == half[1] else half
    return [Trigger('', (), TriggerTarget('window', Target(s.own, window_size=target), STATIC_PATHS))]


def _window_rect(s: _Sizes) -> list[Trigger]:
    window = _explicit_window(s)
    if window is None or window[0] < 2:
        return []
    rect = (window[0] // 2, window[1])
    return [Trigger('', (), TriggerTarget('window_rect', Target(s.own, window_size=rect), STATIC_PATHS))]


def _window_per_stage(s: _Sizes) -> list[Trigger]:
    """Stage i configured with the window halved i times (at least 2): windows a per-stage model resamples each
    from its own. Passed as one [h, w] per stage, which no constructor reads as one rectangular window."""
    window = _explicit_window(s)
    stages = len(s.geometry.stage_depths)
    if window is None or stages < 2:
        return []
    windows = [(max(2, window[0] >> i), max(2, window[1] >> i)) for i in range(stages)]
    if len(set(windows)) == 1:
        return []
    variant = 'windows' + '-'.join(f'{h}' if h == w else f'{h}x{w}' for h, w in windows)
    overrides = (('window_size', tuple(windows)),)
    h, w = s.own
    size = s.fit((max(h * 1.5, h + 1), max(w * 1.5, w + 1)))
    return [Trigger(variant, overrides, TriggerTarget('window_per_stage', Target(size)))] if size else []


def _window_rect_source(s: _Sizes) -> list[Trigger]:
    """A checkpoint with a rectangular window: its table must be read as that window's (not a square's of as many
    rows) and resampled from it, whether to the transposed window (as many rows) or to a square one."""
    window = _explicit_window(s)
    if window is None or window[0] != window[1] or window[0] < 4:
        return []
    rect = (window[0] // 2, window[1])
    source = (('window_size', rect),)
    variant = f'window{rect[0]}x{rect[1]}'
    return [Trigger(variant, source, TriggerTarget('window_rect_source', Target(s.own, window_size=target),
                                                   STATIC_PATHS))
            for target in ((rect[1], rect[0]), rect[0])]


def _img_pad(s: _Sizes) -> list[Trigger]:
    """A size half a patch past the own height and a quarter patch past a wider width: padded by different
    amounts on each axis, so padding the wrong side or axis changes the grid or the values."""
    ph, pw = s.geometry.patch_size
    if min(ph, pw) < 4:
        return []
    h, w = s.own
    size = (h + ph // 2, w + pw + pw // 4)
    return [Trigger('pad', (('dynamic_img_pad', True),), TriggerTarget('img_pad', Target(size)))]


def _own(kind: str, size: Size | None) -> list[Trigger]:
    return [Trigger('', (), TriggerTarget(kind, Target(size)))] if size else []


_KIND_BUILDERS = {'larger': _larger, 'smaller': _smaller, 'rectangular': _rectangular, 'square': _square,
                  'transposed': _transposed, 'patch': _patch, 'window': _window, 'window_rect': _window_rect,
                  'window_per_stage': _window_per_stage, 'window_rect_source': _window_rect_source,
                  'img_pad': _img_pad}
assert set(_KIND_BUILDERS) == set(KINDS)
