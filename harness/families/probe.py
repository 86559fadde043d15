"""What a model's meta-device build shows about its input size, for deciding its family.

The model is built at its own configuration on the meta device (shapes, no memory, no weights) and run
twice through ``forward_features``: at its own input size and at a larger, non-square one. A model whose
pass at the other size works and whose features grow with it accepts a new size; one whose pass raises (or
whose features stay the same: it resizes its input itself) takes only its own. Families read these facts
in their ``claim``; :mod:`harness.analysis.coverage` reports them for every architecture of a release.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from harness.families.geometry import Size, to_size

if TYPE_CHECKING:
    from harness.spec.model import ModelSpec

PROBE_STEP = 64   # the other size: the own size rounded up to this, plus one step in height and two in width


@dataclass(frozen=True)
class Probe:
    name: str
    model: nn.Module | None              # the meta build (None: timm could not build it; ``problem`` says why)
    native_size: Size = (0, 0)
    probe_size: Size = (0, 0)
    native_features: tuple | None = None   # forward_features' shape at each size, batch 1 (a tuple of them for a list)
    probe_features: tuple[int, ...] | None = None    # None: the pass raised (``probe_error``)
    probe_error: str = ''
    problem: str = ''                    # why the probe could not run at all

    @property
    def takes_other_sizes(self) -> bool:
        """The pass at another size works and its features change with the input."""
        return self.probe_features is not None and self.probe_features != self.native_features

    @property
    def timm_resizes(self) -> bool:
        """timm's own API changes this model's input size (so there is something to resample)."""
        return self.model is not None and (hasattr(self.model, 'set_input_size')
                                           or hasattr(self.model, 'dynamic_img_size'))

    @property
    def fixed_size_reason(self) -> str:
        """Why the model takes only its own input size, as a case's ``unsupported`` reason."""
        own = f'{self.native_size[0]}x{self.native_size[1]}'
        if self.probe_features is None:
            return (f'{type(self.model).__name__} takes only its own input size ({own}): at '
                    f'{self.probe_size[0]}x{self.probe_size[1]} forward_features raised {self.probe_error}')
        return (f'{type(self.model).__name__} takes only its own input size ({own}): its features at '
                f'{self.probe_size[0]}x{self.probe_size[1]} are the same {self.native_features} (it resizes its '
                f'input itself)')


def probe(model: 'str | ModelSpec') -> Probe:
    """The probe of a model name at its own configuration, or of a matrix entry whose overrides build another
    class (:func:`harness.families.family_of`), at the size they build it for."""
    from harness.spec.model import ModelSpec
    spec = ModelSpec(model) if isinstance(model, str) else dataclasses.replace(model, alias=None, axes=())
    return _probe(spec)


@functools.lru_cache(maxsize=64)   # bounded: `harness coverage` probes every architecture of a release
def _probe(spec: 'ModelSpec') -> Probe:
    model_name = spec.name
    try:
        model = meta_model(spec).eval()
    except Exception as e:   # noqa: BLE001 - whatever timm raises, the model is no family's
        return Probe(model_name, None, problem=f'timm cannot build it: {type(e).__name__}: {_first_line(e)}')
    channels, *size = (model.pretrained_cfg or {}).get('input_size', (3, 224, 224))
    native = to_size(spec.kwargs['img_size']) if 'img_size' in spec.kwargs else (int(size[0]), int(size[1]))
    other = (_round_up(native[0]) + PROBE_STEP, _round_up(native[1]) + 2 * PROBE_STEP)
    native_features, error = features_shape(model, channels, native)
    if native_features is None:
        return Probe(model_name, model, native, other, problem=f'forward_features at its own size raised {error}')
    probe_features, probe_error = features_shape(model, channels, other)
    return Probe(model_name, model, native, other, native_features, probe_features, probe_error)


def features_shape(model: nn.Module, channels: int, size: Size) -> tuple[tuple[int, ...] | None, str]:
    """``forward_features``' output shape for one image of ``size`` on the model's device, or what it raised."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    try:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, channels, *size, device=device))
        if isinstance(features, (list, tuple)):   # e.g. CrossViT: one tensor per branch
            return tuple(tuple(t.shape) for t in features), ''
        return tuple(features.shape), ''
    except Exception as e:   # noqa: BLE001 - what the model raises at this size is the fact we want
        return None, f'{type(e).__name__}: {_first_line(e)}'


def _round_up(n: int) -> int:
    return math.ceil(n / PROBE_STEP) * PROBE_STEP


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else ''


def meta_model(model: 'ModelSpec') -> nn.Module:
    """The model at its own configuration, built on the meta device (no memory, no init cost): enough to read
    its geometry and its state dict's keys and shapes. Built once per name and overrides: a matrix entry's
    label and own axes do not change the model.

    Older timm releases initialise some weights with ``.item()``, which the meta device cannot do: those
    models are built for real.
    """
    return _meta_build(dataclasses.replace(model, alias=None, axes=()))


@functools.lru_cache(maxsize=64)
def _meta_build(model: 'ModelSpec') -> nn.Module:
    import timm
    try:
        with torch.device('meta'):
            return timm.create_model(model.name, pretrained=False, **model.kwargs)
    except RuntimeError as e:
        if 'meta' not in str(e):
            raise
        return timm.create_model(model.name, pretrained=False, **model.kwargs)
