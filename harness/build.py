"""Build a case's model through one of timm's three ways of changing the input size.

* ``create``: ``timm.create_model(..., pretrained=True, img_size=..., patch_size=..., window_size=...)`` —
  timm resamples the checkpoint while loading it;
* ``set_input_size``: the checkpoint's model at its own configuration, then ``model.set_input_size(...)``;
* ``dynamic``: create at the checkpoint's own configuration with ``dynamic_img_size=True`` (the family's
  ``dynamic_kwargs``: nothing for NaFlexVit, which always resamples per batch) and feed target-size inputs
  (the resampled embedding is computed per forward and never stored).

A timm release or model that lacks the needed API raises :class:`Unsupported`. What timm raises is a
finding, sorted by where it came from: :class:`LoadFailed` (the checkpoint did not load) or
:class:`ResizeFailed` (timm raised while resampling: in ``set_input_size``, or in a resampling function
during the create-time load). Out-of-memory errors are re-raised untouched: they are machine limits.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch import nn

from harness import faults
from harness.checkpoints.store import Checkpoint, source_img_size
from harness.families import Geometry, Target
from harness.families.base import Family


class Unsupported(Exception):
    """The timm release or model has no way to build this case (not a failure)."""


class LoadFailed(Exception):
    def __init__(self, error: str, missing_keys: list[str], unexpected_keys: list[str]):
        super().__init__(error)
        self.error = error
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys


class ResizeFailed(Exception):
    """timm raised while resizing the model (``set_input_size``, or a resampling function at load)."""


@dataclass
class Built:
    """A loaded model in eval mode, plus the keys torch reported while timm loaded it."""
    model: nn.Module
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def build_native(checkpoint: Checkpoint, **extra: Any) -> Built:
    """The checkpoint's model at its own configuration, loaded through timm's pretrained path."""
    model = checkpoint.model
    return _create_pretrained(model.name, checkpoint, {**model.kwargs, **extra})


def build_path(path: str, checkpoint: Checkpoint, family: Family, source: Geometry, target: Target,
               native: Built) -> Built:
    """The case's model; ``native`` is the checkpoint already loaded at its own configuration, which
    ``set_input_size`` starts from (a copy: building it again from the file would give the same model)."""
    if path == 'create':
        kwargs = {**checkpoint.model.kwargs, **family.create_kwargs(target)}
        return _create_pretrained(checkpoint.model.name, checkpoint, kwargs)
    if path == 'set_input_size':
        built = Built(copy.deepcopy(native.model), list(native.missing_keys), list(native.unexpected_keys))
        set_input_size(built.model, family.set_input_size_kwargs(target, source))
        return built
    if path == 'dynamic':
        if not family.only_img_size_changes(target, source):
            raise Unsupported('dynamic_img_size changes only the input size; this case also changes the '
                              'patch or window size')
        built = build_native(checkpoint, **family.dynamic_kwargs())
        if getattr(getattr(built.model, 'patch_embed', None), 'strict_img_size', False):
            raise Unsupported(f'{type(built.model).__name__} in this timm release ignores dynamic_img_size=True: its '
                              f'patch embedding still takes only its own input size')
        return built
    raise ValueError(f'unknown build path {path!r}')


def set_input_size(model: nn.Module, kwargs: dict[str, Any]) -> None:
    """``model.set_input_size(**kwargs)``: Unsupported where this release lacks it or an argument, ResizeFailed
    where it raises."""
    method = getattr(model, 'set_input_size', None)
    if method is None:
        raise Unsupported(f'{type(model).__name__} has no set_input_size in this timm release')
    accepted = inspect.signature(method).parameters
    missing = [k for k in kwargs if k not in accepted]
    if missing:
        raise Unsupported(f'{type(model).__name__}.set_input_size has no {", ".join(missing)} argument')
    try:
        method(**kwargs)
    except Exception as e:   # noqa: BLE001 - whatever timm raises while resizing is the finding
        if faults.is_out_of_memory(e):
            raise
        raise ResizeFailed(f'set_input_size({_arguments(kwargs)}) raised {faults.describe(e)}') from e


def _create_pretrained(name: str, checkpoint: Checkpoint, kwargs: dict[str, Any]) -> Built:
    import timm
    overlay = checkpoint.pretrained_cfg_overlay(source_img_size(checkpoint.model))
    where = f' (loading {checkpoint.shown_file})' if checkpoint.file else ''
    with _loaded_keys() as keys:
        try:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
        except Exception as e:   # noqa: BLE001 - whatever timm raises while loading is the finding
            if faults.is_out_of_memory(e):
                raise
            unknown = _unknown_kwarg(e, kwargs)
            if unknown:
                raise Unsupported(f'{name} does not take {unknown}= in this timm release') from None
            if faults.needs_network(e):
                raise Unsupported(f'{name} needs the network: timm fetches weights from the Hugging Face hub while '
                                  f'building it, besides the checkpoint ({faults.describe(e, limit=1)})') from None
            if faults.raised_while_resampling(e):
                raise ResizeFailed(f'create_model({_arguments(kwargs)}) raised while resampling the checkpoint: '
                                   f'{faults.describe(e)}{where}') from e
            raise LoadFailed(faults.describe(e) + where, keys.missing, keys.unexpected) from None
    return Built(model.eval(), keys.missing, keys.unexpected)


def _unknown_kwarg(error: Exception, kwargs: dict[str, Any]) -> str | None:
    match = re.search(r"unexpected keyword argument '(\w+)'", str(error)) if isinstance(error, TypeError) else None
    return match.group(1) if match and match.group(1) in kwargs else None


def _arguments(kwargs: dict[str, Any]) -> str:
    return ', '.join(f'{k}={v!r}' for k, v in kwargs.items())


@dataclass
class _Keys:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _loaded_keys() -> Iterator[_Keys]:
    """The missing and unexpected keys of the ``load_state_dict`` calls made inside the block.

    timm states them only in log messages whose wording changes between releases, so they are taken where
    torch computes them: a post hook that ``load_state_dict`` calls with its ``incompatible_keys`` before it
    raises for strict loading. Nothing else about the load changes.
    """
    keys = _Keys()
    original = nn.Module.load_state_dict

    def load_state_dict(module: nn.Module, *args: Any, **kwargs: Any):
        def record(_: nn.Module, incompatible) -> None:
            keys.missing += list(incompatible.missing_keys)
            keys.unexpected += list(incompatible.unexpected_keys)
        handle = module.register_load_state_dict_post_hook(record)
        try:
            return original(module, *args, **kwargs)
        finally:
            handle.remove()

    nn.Module.load_state_dict = load_state_dict
    try:
        yield keys
    finally:
        nn.Module.load_state_dict = original
