"""Build a case's model through one of timm's three ways of changing the input size.

* ``create``: ``timm.create_model(..., pretrained=True, img_size=..., patch_size=..., window_size=...)`` —
  timm resamples the checkpoint while loading it;
* ``set_input_size``: create at the checkpoint's own configuration, then ``model.set_input_size(...)``;
* ``dynamic``: create at the checkpoint's own configuration with ``dynamic_img_size=True`` and feed
  target-size inputs (the resampled embedding is computed per forward and never stored).

A timm release or model that lacks the needed API raises :class:`Unsupported`; a checkpoint that does not
load raises :class:`LoadFailed` carrying the exception and the missing/unexpected keys.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch import nn

from harness.checkpoints.store import Checkpoint, source_img_size
from harness.families import Geometry, Target
from harness.families.base import Family

_MISSING = re.compile(r'Missing key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)|Missing keys \((.*?)\) discovered')
_UNEXPECTED = re.compile(r'Unexpected key\(s\) in state_dict: (.*?)\.\s*(?:\n|$)|Unexpected keys \((.*?)\) found')


class Unsupported(Exception):
    """The timm release or model has no way to build this case (not a failure)."""


class LoadFailed(Exception):
    def __init__(self, error: str, missing_keys: list[str], unexpected_keys: list[str]):
        super().__init__(error)
        self.error = error
        self.missing_keys = missing_keys
        self.unexpected_keys = unexpected_keys


@dataclass
class Built:
    """A loaded model in eval mode, plus the keys timm reported while loading (non-strict loads log them)."""
    model: nn.Module
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def build_native(checkpoint: Checkpoint, **extra: Any) -> Built:
    """The checkpoint's model at its own configuration, loaded through timm's pretrained path."""
    model = checkpoint.model
    return _create_pretrained(model.name, checkpoint, {**model.kwargs, **extra})


def build_path(path: str, checkpoint: Checkpoint, family: Family, source: Geometry, target: Target) -> Built:
    if path == 'create':
        kwargs = {**checkpoint.model.kwargs, **family.create_kwargs(target)}
        return _create_pretrained(checkpoint.model.name, checkpoint, kwargs)
    if path == 'set_input_size':
        built = build_native(checkpoint)
        _set_input_size(built.model, family.set_input_size_kwargs(target, source))
        return built
    if path == 'dynamic':
        if not family.only_img_size_changes(target, source):
            raise Unsupported('dynamic_img_size changes only the input size; this case also changes the '
                              'patch or window size')
        return build_native(checkpoint, dynamic_img_size=True)
    raise ValueError(f'unknown build path {path!r}')


def _set_input_size(model: nn.Module, kwargs: dict[str, Any]) -> None:
    method = getattr(model, 'set_input_size', None)
    if method is None:
        raise Unsupported(f'{type(model).__name__} has no set_input_size in this timm release')
    accepted = inspect.signature(method).parameters
    missing = [k for k in kwargs if k not in accepted]
    if missing:
        raise Unsupported(f'{type(model).__name__}.set_input_size has no {", ".join(missing)} argument')
    method(**kwargs)


def _create_pretrained(name: str, checkpoint: Checkpoint, kwargs: dict[str, Any]) -> Built:
    import timm
    overlay = checkpoint.pretrained_cfg_overlay(source_img_size(checkpoint.model))
    try:
        with _captured_timm_log() as log:
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        unknown = _unknown_kwarg(e, kwargs)
        if unknown:
            raise Unsupported(f'{name} does not take {unknown}= in this timm release') from None
        raise _load_failed(e, checkpoint) from None
    except Exception as e:   # noqa: BLE001 - whatever timm raises while loading is the finding
        raise _load_failed(e, checkpoint) from None
    missing, unexpected = _keys_in(log.getvalue())
    return Built(model.eval(), missing, unexpected)


def _unknown_kwarg(error: TypeError, kwargs: dict[str, Any]) -> str | None:
    match = re.search(r"unexpected keyword argument '(\w+)'", str(error))
    return match.group(1) if match and match.group(1) in kwargs else None


def _load_failed(error: Exception, checkpoint: Checkpoint) -> LoadFailed:
    text = f'{type(error).__name__}: {error}'
    where = f' (loading {checkpoint.file})' if checkpoint.file else ''
    missing, unexpected = _keys_in(text)
    return LoadFailed(_first_lines(text) + where, missing, unexpected)


def _keys_in(text: str) -> tuple[list[str], list[str]]:
    def keys(pattern: re.Pattern) -> list[str]:
        found = []
        for match in pattern.finditer(text):
            listed = match.group(1) or match.group(2) or ''
            found += [k.strip().strip('"\'') for k in listed.split(',') if k.strip()]
        return found
    return keys(_MISSING), keys(_UNEXPECTED)


def _first_lines(text: str, limit: int = 12) -> str:
    lines = text.strip().splitlines()
    return '\n'.join(lines[:limit] + ([f'... ({len(lines) - limit} more lines)'] if len(lines) > limit else []))


@contextlib.contextmanager
def _captured_timm_log() -> Iterator[Any]:
    """timm reports keys it could not match through its logger when it loads non-strictly."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger('timm')
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
