"""What the harness knows about each model family, and which family a timm model is in.

A family answers the questions that differ between ViT, Swin and a CNN: which arguments change the input size,
what geometry a model should have at a target size, what output shapes follow from it, and which tensors
are resampled (so the fidelity check knows what to recompute).

Families register themselves, as timm's models do (:func:`register_family`): a new family joins by adding one
module to this package. A model is in the first family, by ``rank``, that claims its meta-device build:
families with an oracle claim the timm classes they implement (``isinstance``: ``deit3_*``, a
``VisionTransformer`` defined in ``deit.py``, is a ViT); then ``cnn`` claims models with nothing to resample,
and ``fixed_size`` models that take only their own input size, both proven by a forward pass at another size
(:mod:`harness.families.probe`). A model no family claims is not supported, and :func:`unclaimed_reason`
says why.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import TYPE_CHECKING

# the spatial vocabulary, under the names every family module and caller uses (harness.families.Size, ...)
from harness.families.geometry import Geometry as Geometry
from harness.families.geometry import Size as Size
from harness.families.geometry import Target as Target
from harness.families.geometry import to_size as to_size

if TYPE_CHECKING:
    from harness.families.base import Family
    from harness.spec.model import ModelSpec

FAMILIES: dict[str, 'Family'] = {}   # name -> the family's one instance, filled as family modules import


def register_family(cls: type['Family']) -> type['Family']:
    """Class decorator: the family joins :data:`FAMILIES` under its ``name``."""
    FAMILIES[cls.name] = cls()
    return cls


def families() -> list['Family']:
    """Every registered family, in the order they are asked to claim a model."""
    _import_family_modules()
    return sorted(FAMILIES.values(), key=lambda family: family.rank)


def family_of(model: 'str | ModelSpec') -> 'Family | None':
    """The family of a timm model name, or of a matrix entry (a :class:`~harness.spec.matrix.ModelSpec`): the class
    its overrides build decides (``use_naflex=True`` builds an EVA or a ViT as a NaFlexVit). None when no
    family claims it."""
    return _claim(_claimed_spec(model))[0]


def unclaimed_reason(model: 'str | ModelSpec') -> str:
    """Why no family claims ``model`` ('' when one does)."""
    return _claim(_claimed_spec(model))[1]


def _claimed_spec(model: 'str | ModelSpec') -> 'ModelSpec':
    """What the claim is decided on: the name alone, unless the entry's overrides build another class than the
    name's own configuration (or cannot be built: then the name's family, and validation says what timm
    raised)."""
    from harness.spec.model import ModelSpec
    if isinstance(model, str) or not model.overrides:
        return ModelSpec(model if isinstance(model, str) else model.name)
    return _class_deciding(ModelSpec(model.name, model.overrides))


@functools.lru_cache(maxsize=None)   # one entry per model entry's configuration: cases ask on every step
def _class_deciding(model: 'ModelSpec') -> 'ModelSpec':
    from harness.families.probe import meta_model, probe
    from harness.spec.model import ModelSpec
    own = probe(model.name).model
    try:
        built = meta_model(model)
    except Exception:   # noqa: BLE001 - the matrix validator reports the build failure with the entry
        built = own
    return ModelSpec(model.name) if own is None or type(built) is type(own) else \
        ModelSpec(model.name, model.overrides)


@functools.lru_cache(maxsize=64)
def _claim(model: 'ModelSpec') -> tuple['Family | None', str]:
    from harness.families.probe import probe
    found = probe(model)
    if found.model is None:
        return None, found.problem
    reasons = []
    for family in families():
        why_not = family.claim(found)
        if why_not is None:
            return family, ''
        reasons.append(why_not)
    return None, next(filter(None, reasons), 'no family claims it')


@functools.lru_cache(maxsize=None)
def _import_family_modules() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name not in ('base', 'probe'):
            importlib.import_module(f'{__name__}.{module.name}')
