"""Vet a user's checkpoint file before any case runs, without running code from it.

A ``.pth`` is a pickle, and unpickling can run arbitrary code; some timm releases load pretrained files with
``weights_only=False``. So every user file is read here first the safe way (``torch.load(weights_only=True)``,
which refuses any pickle that would import or call something outside torch's allow-list; safetensors and
``.npz`` with every array read without pickles), and refused if that fails. timm then loads the file's bytes
unchanged, so its real layout handling is still what is tested: the copy of them in the cache that was vetted
again when its cases ran (:func:`harness.checkpoints.store.vetted_copy`), never the user's path, which may have
changed since. Missing, empty, truncated and foreign files are refused too.
:func:`read_checkpoint` reads a vetted file's contents the same safe way, for the harness's own reference.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np


def file_format(path: Path, custom_load: bool = False) -> str:
    """How a checkpoint is read: 'safetensors' (by the suffix, as timm picks its reader), 'npz' (the suffix, or
    ``custom_load``: the model's own ``load_pretrained`` reads .npz) or 'pickle' (``torch.load``)."""
    if path.suffix == '.safetensors':
        return 'safetensors'
    return 'npz' if path.suffix == '.npz' or custom_load else 'pickle'


def checkpoint_file_problem(path: Path, custom_load: bool = False) -> str | None:
    """Why ``path`` cannot be loaded as a checkpoint safely, or None when it can."""
    if not path.exists():
        return 'does not exist'
    if not path.is_file():
        return 'is not a file'
    if path.stat().st_size == 0:
        return 'is empty'
    return _PROBLEMS[file_format(path, custom_load)](path)


def read_checkpoint(path: Path, custom_load: bool = False) -> Any:
    """A vetted file's contents, read without running code from it: a dict of tensors (safetensors, ``.npz``
    arrays as tensors) or whatever ``torch.load(weights_only=True)`` allows (nested dicts of tensors)."""
    found = file_format(path, custom_load)
    if found == 'safetensors':
        from safetensors.torch import load_file
        return load_file(str(path))
    if found == 'npz':
        import torch
        with np.load(path, allow_pickle=False) as arrays:
            return {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    return _torch_load(path)


def _torch_load(path: Path) -> Any:
    import torch
    with warnings.catch_warnings():   # torch warns about pickle protocols it then refuses anyway
        warnings.simplefilter('ignore')
        return torch.load(path, map_location='cpu', weights_only=True)


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            return None if list(f.keys()) else 'holds no tensors'
    except (SafetensorError, OSError, ValueError) as e:
        return f'is not a readable safetensors file ({e})'


def _npz_problem(path: Path) -> str | None:
    """Every array is read: ``np.load`` opens the archive lazily, and an object array (a pickle, which could
    hold a callable) is refused only when it is read."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            for name in arrays.files:
                arrays[name]
            return None if arrays.files else 'holds no arrays'
    except ValueError as e:   # numpy's word for an array that needs pickle
        return f'refused: it holds pickled objects, and the harness never unpickles a checkpoint ({e})'
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        return f'is not a readable .npz archive (truncated or not a checkpoint?): {e}'


def _pickle_problem(path: Path) -> str | None:
    try:
        contents = _torch_load(path)
    except pickle.UnpicklingError as e:
        return (f'refused: torch.load(weights_only=True) cannot read it ({_specific_line(e)}); the harness '
                f'loads only checkpoints that run no code when unpickled')
    except Exception as e:   # noqa: BLE001 - torch's readers raise anything at all on foreign bytes
        return f'is not a readable PyTorch checkpoint (truncated or not a checkpoint?): {_specific_line(e)}'
    return None if _holds_tensors(contents) else 'holds no tensors'


def _specific_line(error: Exception) -> str:
    """The line of torch's message that says what was wrong (it wraps it in paragraphs of advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith(('Trying to load', 'Unsupported', 'Could not find'))]
    return (specific or lines or [type(error).__name__])[0].split('. ')[0]


def _holds_tensors(value: Any) -> bool:
    import torch
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(_holds_tensors(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_tensors(v) for v in value)
    return False


_PROBLEMS = {'safetensors': _safetensors_problem, 'npz': _npz_problem, 'pickle': _pickle_problem}
