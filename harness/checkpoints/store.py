"""Checkpoints for cases: synthesized once, cached on disk, described for the build stage.

A synthesized entry is a folder holding the checkpoint in its origin's layout, the timm state dict a correct
loader must recover from it (``reference.safetensors``) and ``meta.json``. The folder name hashes
everything that determines the bytes (model, overrides, origin, seed, timm release, torch release and the
harness's own synthesis version), so a change in any of them never reuses a stale file.

A user's file (``{file: PATH}``) is copied into the cache under the sha256 of its bytes, and that copy is vetted
and is the only file timm and the harness's reference read: timm reads its file again at every build, so PATH
itself, replaced after the matrix was vetted, would be loaded unvetted (a pickle payload ran under timm 1.0.11).

Entries are written to a temporary folder with their checksums (:mod:`harness.checkpoints.integrity`) and
renamed into place, so concurrent xdist workers never see half a file; an entry whose files no longer match
its checksums is rebuilt, and the run is told.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors.torch import load_file, save_file

from harness.checkpoints.integrity import checksum_problem, copy_hashing, sha256_of, write_checksums
from harness.checkpoints.origins import FILE_ORIGIN, HUB_ORIGIN, LayoutError, origin_named, resampling_for
from harness.checkpoints.vetting import checkpoint_file_problem
from harness.families import to_size
from harness.spec.matrix import ModelSpec, OriginSpec
from harness.store import schema

SYNTHESIS_VERSION = 4   # bump when synthesize.py, a layout writer or the entry's files (4: sha256.json) change
USER_FILES = 'files'   # the copies of users' files, under checkpoints/ in the cache


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
    user_file: Path | None = None        # a user's file as the matrix names it (``file`` is its vetted copy)

    @property
    def shown_file(self) -> Path | None:
        """The file as messages name it: the user's path, not the cache copy's."""
        return self.user_file or self.file

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


def checkpoint_for(model: ModelSpec, origin: OriginSpec, seed: int, cache_dir: Path,
                   say: Callable[[str], None] = print) -> Checkpoint:
    """The checkpoint a case loads from: a user's file as its vetted copy in the cache, a synthesized one made (and
    cached) on first use; ``say`` tells the run of a corrupted cache entry rebuilt."""
    if origin.name == HUB_ORIGIN:
        return Checkpoint(model, HUB_ORIGIN, None, None, False, *loader_resampling(origin))
    if origin.name == FILE_ORIGIN:
        user_file = Path(origin.file)
        return Checkpoint(model, FILE_ORIGIN, vetted_copy(user_file, origin.custom_load, cache_dir, say),
                          origin.num_classes, origin.custom_load, *loader_resampling(origin), user_file=user_file)
    return _synthesized(model, origin.name, seed, cache_dir, say)


def vetted_copy(path: Path, custom_load: bool, cache_dir: Path, say: Callable[[str], None] = print) -> Path:
    """The copy of the user's file ``path`` in the cache (``checkpoints/files/<sha256>-<suffix>/``), made on
    first use, its checksum verified and its contents vetted now: what timm loads is what was vetted, whatever
    happens to ``path`` after. A file that no longer passes vetting is a :class:`CheckpointError`."""
    root = cache_dir / 'checkpoints' / USER_FILES
    try:
        entry = _user_entry(root, sha256_of(path), path)
    except OSError as e:
        raise CheckpointError(f'{path} could not be read when its cases ran: {e}') from None
    entry = _sound(entry, lambda: _store_copy(root, path), say, f'copying {path} again')
    copy = entry / _copy_name(path)
    problem = checkpoint_file_problem(copy, custom_load)
    if problem:
        raise CheckpointError(f'{path} (as read when its cases ran, copied to {copy}) {problem}')
    return copy


def _sound(entry: Path, make: Callable[[], Path], say: Callable[[str], None], again: str) -> Path:
    """``entry`` where it is there and its files match their checksums; else ``make()``'s, said where the entry
    was there (corrupted)."""
    problem = checksum_problem(entry) if entry.exists() else None
    if problem:
        say(f'checkpoint cache: {entry} {problem}; {again}')
    return make() if problem or not entry.exists() else entry


def _user_entry(root: Path, digest: str, path: Path) -> Path:
    return root / f'{digest}-{path.suffix.lstrip(".") or "none"}'


def _copy_name(path: Path) -> str:
    """The suffix is kept: timm and the vetting read a file by its suffix (.safetensors, .npz)."""
    return f'checkpoint{path.suffix}'


def _store_copy(root: Path, path: Path) -> Path:
    """Copy ``path`` into the cache under the sha256 of the bytes copied; the entry's folder."""
    with _staging(root) as staging:
        digest = copy_hashing(path, staging / _copy_name(path))
        (staging / _copy_name(path)).chmod(0o444)   # a copy is never written again
        return _renamed_into_place(staging, _user_entry(root, digest, path))


def loader_resampling(origin: OriginSpec) -> tuple[str, bool]:
    """(interpolation, antialias) of timm's loader for the origin's files at create time: the origin's, or for a
    user's file the one its entry's ``custom_load`` picks (:func:`harness.checkpoints.origins.resampling_for`)."""
    if origin.name == FILE_ORIGIN:
        return resampling_for(origin.custom_load)
    return origin_named(origin.name).resampling


def source_img_size(model: ModelSpec) -> tuple[int, int] | None:
    """The checkpoint's own input size when the matrix sets one (e.g. a 1024x128 spectrogram model)."""
    size = model.kwargs.get('img_size')
    return to_size(size) if size is not None else None


def discard_if_disposable(checkpoint: Checkpoint | None) -> None:
    """Remove a synthesized checkpoint of a zoo architecture at its real configuration once its cases are done:
    a release's CNNs alone hold 18 billion parameters, 146 GB as checkpoint and reference, more than a cache
    (or a CI runner's disk) keeps. A later run synthesizes it again, to the same bytes (it is seeded)."""
    if checkpoint is not None and checkpoint.reference_file is not None and checkpoint.model.zoo \
            and not checkpoint.model.overrides:
        shutil.rmtree(checkpoint.reference_file.parent, ignore_errors=True)


def _synthesized(model: ModelSpec, origin_name: str, seed: int, cache_dir: Path,
                 say: Callable[[str], None]) -> Checkpoint:
    origin = origin_named(origin_name)
    entry = cache_dir / 'checkpoints' / f'{model.name}-{origin_name}-{_cache_key(model, origin_name, seed)}'
    entry = _sound(entry, lambda: _write_entry(entry, model, origin_name, seed), say, 'synthesizing it again')
    meta = schema.upgrade(schema.CHECKPOINT_META, json.loads((entry / 'meta.json').read_text()))
    return Checkpoint(model, origin_name, entry / origin.filename, meta['num_classes'], origin.custom_load,
                      *origin.resampling, reference_file=entry / 'reference.safetensors')


def _write_entry(entry: Path, model: ModelSpec, origin_name: str, seed: int) -> Path:
    from harness.checkpoints.synthesize import seeded_model

    with _staging(entry.parent) as staging:
        source = seeded_model(model.name, model.kwargs, seed)
        try:
            origin = origin_named(origin_name)
            expected = origin.write(source, staging / origin.filename)
        except LayoutError as e:
            raise CheckpointError(f'{origin_name} layout does not fit {model.label}: {e}') from None
        save_file({k: v.contiguous() for k, v in expected.items()}, str(staging / 'reference.safetensors'))
        meta = schema.stamped(schema.CHECKPOINT_META, {'model': model.name, 'overrides': dict(model.overrides),
                                                       'origin': origin_name, 'seed': seed,
                                                       'num_classes': source.num_classes})
        (staging / 'meta.json').write_text(json.dumps(meta, indent=1, default=list))
        return _renamed_into_place(staging, entry)


@contextlib.contextmanager
def _staging(parent: Path) -> Iterator[Path]:
    """A temporary folder beside the cache entries, removed on the way out (renamed into place or not)."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix='.staging-', dir=parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _renamed_into_place(staging: Path, entry: Path) -> Path:
    """``staging``, its checksums written, renamed to ``entry``; a corrupted entry there is set aside first. Where
    another worker renamed its own in meanwhile, that one (identical, by the key) is kept."""
    write_checksums(staging)
    if entry.exists() and checksum_problem(entry):
        aside = Path(tempfile.mkdtemp(prefix='.corrupt-', dir=entry.parent))
        with contextlib.suppress(OSError):   # another worker set it aside first
            os.rename(entry, aside / entry.name)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.rename(staging, entry)
    except OSError:
        if not entry.exists():
            raise
        # another worker won the race; its entry is identical
    return entry


def _cache_key(model: ModelSpec, origin_name: str, seed: int) -> str:
    import timm
    payload = json.dumps([model.name, model.overrides, origin_name, seed, timm.__version__,
                          torch.__version__.split('+')[0], SYNTHESIS_VERSION], default=list)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
