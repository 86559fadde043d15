"""Checkpoint origins: the file layouts the harness can load a model from, one record each, one module each.

Every fact about an origin lives in its record (:class:`Origin`, as timm's ``PretrainedCfg`` holds a tag's):
which families' models it fits, the file a synthesized checkpoint is written to (and so its format and the
vetting that reads it), whether timm loads it with the model's own ``load_pretrained``, how timm's loader
resamples it at create time, the strict layout writer synthesis and matrix validation use, and the compact
writer a repro script carries. Origins register themselves, as timm's models do (:func:`register_origin`): an
origin joins by adding one module to this package, which defines its writers and registers them.

Synthesized origins are written by :mod:`harness.checkpoints.store` from a seeded model; ``hub`` loads timm's
real pretrained tag and ``file`` a user's checkpoint. All of them go through timm's own loading code.

This module imports neither torch nor timm: the names below are read while a matrix is validated. The origin
modules do, and are imported on the first lookup (:func:`origins`), as families are.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from torch import Tensor, nn

HUB_ORIGIN = 'hub'
FILE_ORIGIN = 'file'
StateDict = dict[str, 'Tensor']
Writer = Callable[['nn.Module', Path], StateDict]   # a model saved to a path; returns what timm recovers


class LayoutError(ValueError):
    """The model has tensors the layout cannot hold, or lacks tensors every file of the layout has."""


def resampling_for(custom_load: bool) -> tuple[str, bool]:
    """(interpolation, antialias) of timm's loader at create time: the ``.npz`` loader (``custom_load``)
    resamples bilinear without antialiasing, the others bicubic with it."""
    return ('bilinear', False) if custom_load else ('bicubic', True)


@dataclass(frozen=True)
class Origin:
    """One origin's facts. ``convert`` maps a model to what the origin's file holds and returns it with the timm
    state dict a correct loader must recover; it needs no real weights, so matrix validation runs it on a
    meta-device model to find a layout that does not fit before anything is synthesized. ``save`` writes what
    ``convert`` returned to ``filename``. ``repro_writer`` does both in the few lines a repro script carries
    (:mod:`harness.repro`): every tensor timm reads, none of what a release carries beside them."""
    name: str
    description: str
    rank: int                       # origins are listed, and a real file's layout looked for, in rank order
    families: tuple[str, ...] | None = None   # the families whose models it fits; None: every family
    filename: str | None = None     # file name of a synthesized checkpoint; None: not synthesized
    custom_load: bool = False       # timm loads it with the model's own `load_pretrained` (.npz releases)
    convert: Callable[['nn.Module'], tuple[Any, StateDict]] | None = None
    save: Callable[[Any, Path], None] | None = None
    repro_writer: Writer | None = None

    @property
    def synthesized(self) -> bool:
        return self.filename is not None

    @property
    def resampling(self) -> tuple[str, bool]:
        """How timm's loader for this origin's files resamples embeddings at create time."""
        return resampling_for(self.custom_load)

    @property
    def file_format(self) -> str | None:
        """The format the vetting reads a synthesized file as (:func:`harness.checkpoints.vetting.file_format`)."""
        from harness.checkpoints.vetting import file_format
        return file_format(Path(self.filename), self.custom_load) if self.filename else None

    def applies_to(self, family: str) -> bool:
        return self.families is None or family in self.families

    def write(self, model: 'nn.Module', path: Path) -> StateDict:
        """Save ``model`` to ``path`` in the layout; the timm state dict a correct loader recovers from it."""
        contents, expected = self.convert(model)
        self.save(contents, path)
        return expected

    def layout_problem(self, model: 'nn.Module') -> str | None:
        """Why ``model`` does not fit the layout, or None (also None for an origin with no layout to fit)."""
        if self.convert is None:
            return None
        try:
            self.convert(model)
        except LayoutError as e:
            return str(e)
        return None


_REGISTRY: dict[str, Origin] = {}   # filled as the origin modules import


def register(origin: Origin) -> Origin:
    if origin.name in _REGISTRY:
        raise ValueError(f'origin {origin.name!r} is registered twice')
    _REGISTRY[origin.name] = origin
    return origin


def register_origin(name: str, description: str, rank: int, **facts: Any) -> Callable[[Callable], Callable]:
    """Function decorator for an origin's layout writer (its ``convert``): the origin joins the registry with
    ``facts`` (the other fields of :class:`Origin`)."""
    def decorate(convert: Callable) -> Callable:
        register(Origin(name, description, rank, convert=convert, **facts))
        return convert
    return decorate


def origins() -> dict[str, Origin]:
    """Every registered origin by name, in rank order."""
    _import_origin_modules()
    return dict(sorted(_REGISTRY.items(), key=lambda item: (item[1].rank, item[0])))


def origin_named(name: str) -> Origin:
    return origins()[name]


def origins_of(family: str) -> list[str]:
    """The origins that apply to a family's models, by name."""
    return [name for name, origin in origins().items() if origin.applies_to(family)]


@functools.lru_cache(maxsize=None)
def _import_origin_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f'{__name__}.{module.name}')
