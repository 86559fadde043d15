"""Checkpoints for cases: synthesized once, cached on disk, described for the build stage.

A cache entry is a folder holding the checkpoint in its origin's layout, the timm state dict a correct
loader must recover from it (``reference.safetensors``) and ``meta.json``. The folder name hashes
everything that determines the bytes (model, overrides, origin, seed, timm release, torch release and the
harness's own synthesis version), so a change in any of them never reuses a stale file. Entries are
written to a temporary folder and renamed into place, so concurrent xdist workers never see half a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from harness.families import to_size
from harness.matrix import ModelSpec, OriginSpec
from harness.origins import FILE_ORIGIN, HUB_ORIGIN, ORIGINS

SYNTHESIS_VERSION = 3   # bump when synthesize.py or a layout writer changes what it writes


class CheckpointError(RuntimeError):
    """A checkpoint could not be produced or read (bad file, layout that does not fit the model)."""


@dataclass(frozen=True)
class Checkpoint:
    """Everything the build stage needs to load a case's weights through timm."""
    model: ModelSpec
    origin: str
    file: Path | None                    # None: the hub
    num_classes: int | None              # class count stored in the file (None: timm's default)
    custom_load: bool
    interpolation: str                   # how timm's loader for this layout resamples at create time
    antialias: bool
    reference_file: Path | None = None   # synthesized only: the state dict the loader must recover

    def pretrained_cfg_overlay(self, source_img_size: tuple[int, int] | None) -> dict[str, Any] | None:
        """What timm needs to load a local file as if it were the pretrained tag.

        ``num_classes`` keeps timm from dropping the classifier when the default tag's class count differs,
        ``input_size`` tells it the grid the checkpoint was trained on (rectangular sources!), and
        ``custom_load`` is set explicitly because a tag whose default release is an .npz carries True.
        """
        if self.file is None:
            return None
        overlay: dict[str, Any] = {'file': str(self.file), 'custom_load': self.custom_load}
        if self.num_classes is not None:
            overlay['num_classes'] = self.num_classes
        if source_img_size is not None:
            overlay['input_size'] = (3, *source_img_size)
        return overlay

    def reference_state_dict(self) -> dict[str, torch.Tensor] | None:
        return load_file(str(self.reference_file)) if self.reference_file else None


def checkpoint_for(model: ModelSpec, origin: OriginSpec, seed: int, cache_dir: Path) -> Checkpoint:
    """The checkpoint a case loads from, synthesizing (and caching) it when the origin is synthesized."""
    if origin.name == HUB_ORIGIN:
        return Checkpoint(model, HUB_ORIGIN, None, None, False, 'bicubic', True)
    if origin.name == FILE_ORIGIN:
        return Checkpoint(model, FILE_ORIGIN, Path(origin.file), origin.num_classes, origin.custom_load,
                          *loader_resampling(origin))
    return _synthesized(model, origin.name, seed, cache_dir)


def loader_resampling(origin: OriginSpec) -> tuple[str, bool]:
    """(interpolation, antialias) of timm's loader for the origin's files at create time: the ``.npz`` loader
    (``custom_load``) resamples bilinear without antialiasing, the others bicubic with it."""
    if origin.name == FILE_ORIGIN:
        return ('bilinear', False) if origin.custom_load else ('bicubic', True)
    known = ORIGINS[origin.name]
    return known.interpolation, known.antialias


def source_img_size(model: ModelSpec) -> tuple[int, int] | None:
    """The checkpoint's own input size when the matrix sets one (e.g. a 1024x128 spectrogram model)."""
    size = model.kwargs.get('img_size')
    return to_size(size) if size is not None else None


def _synthesized(model: ModelSpec, origin_name: str, seed: int, cache_dir: Path) -> Checkpoint:
    origin = ORIGINS[origin_name]
    entry = cache_dir / 'checkpoints' / f'{model.name}-{origin_name}-{_cache_key(model, origin_name, seed)}'
    if not (entry / 'meta.json').exists():
        _write_entry(entry, model, origin_name, seed)
    meta = json.loads((entry / 'meta.json').read_text())
    return Checkpoint(model, origin_name, entry / origin.filename, meta['num_classes'], origin.custom_load,
                      origin.interpolation, origin.antialias, reference_file=entry / 'reference.safetensors')


def _write_entry(entry: Path, model: ModelSpec, origin_name: str, seed: int) -> None:
    from harness.checkpoints.layouts import LAYOUTS, LayoutError
    from harness.checkpoints.synthesize import seeded_model

    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.staging-', dir=entry.parent))
    try:
        source = seeded_model(model.name, model.kwargs, seed)
        try:
            expected = LAYOUTS[origin_name].write(source, staging / ORIGINS[origin_name].filename)
        except LayoutError as e:
            raise CheckpointError(f'{origin_name} layout does not fit {model.label}: {e}') from None
        save_file({k: v.contiguous() for k, v in expected.items()}, str(staging / 'reference.safetensors'))
        meta = {'model': model.name, 'overrides': dict(model.overrides), 'origin': origin_name, 'seed': seed,
                'num_classes': source.num_classes}
        (staging / 'meta.json').write_text(json.dumps(meta, indent=1, default=list))
        try:
            os.rename(staging, entry)
        except OSError:
            pass   # another worker won the race; its entry is identical
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cache_key(model: ModelSpec, origin_name: str, seed: int) -> str:
    import timm
    payload = json.dumps([model.name, model.overrides, origin_name, seed, timm.__version__,
                          torch.__version__.split('+')[0], SYNTHESIS_VERSION], default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
