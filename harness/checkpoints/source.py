"""The source tensors of a real checkpoint (``{file: PATH}``, ``hub``), read from its file by the harness itself.

A synthesized checkpoint comes with the timm state dict a correct loader must recover; a user's file does not.
Taking timm's own load at the native size instead would make ``reload`` compare timm with itself, and start
fidelity's oracle from whatever timm loaded (a Swin table timm scrambles on every load would pass). So the file
is read here, the safe way (:func:`harness.checkpoints.vetting.read_checkpoint`: no code runs), unwrapped as
timm's ``load_state_dict`` unwraps it (``state_dict_ema``, ``model_ema``, ``state_dict`` or ``model``; the
``module.`` and ``_orig_mod.`` prefixes), and mapped to timm's keys through the layouts the harness knows.

The layout writers map timm to an origin (:mod:`harness.checkpoints.origins`). They are inverted by tracing:
the checkpoint's model is given a distinct integer id per element, written in each layout, and every id found
again in the written tensors says where that element of a timm tensor sits in a file of the layout. A tensor
the layout derives rather than stores (DINOv2 and classic-ViT class tokens folded with a position, CLIP's
absent ``head.bias``) cannot be read back; nor can a tensor the file lacks or holds at another shape. Those
tensors are taken from timm's own load, and the note the case records names them: the check is weaker there,
and says so.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from harness.checkpoints.vetting import checkpoint_file_problem, read_checkpoint

if TYPE_CHECKING:
    from harness.checkpoints.store import Checkpoint

StateDict = dict[str, Tensor]
# timm's load_state_dict: the first of these a checkpoint dict holds (EMA weights first), and the wrapper prefixes
WRAPPER_KEYS = ('state_dict_ema', 'model_ema', 'state_dict', 'model')
WRAPPER_PREFIXES = ('_orig_mod.', 'module.')   # in either order: removed while one is left
# trace ids: a stride apart from 2**40 (exact in float64), each plus a seeded offset below the stride, so a
# tensor a layout derives (a mean of ids) is almost never an id; an id found twice is ambiguous, not read back
_ID_BASE, _ID_STRIDE = 2.0 ** 40, 64


@dataclass(frozen=True)
class Source:
    """The checkpoint's own tensors under timm's keys (the model's whole state dict: each floating-point tensor
    from the file where it could be read back, else, like counters and indices, timm's load of it), how many
    came from the file, and what the reference is where they did not."""
    tensors: StateDict
    from_file: int           # how many tensors came from the file
    note: str | None         # what the reference is where it is not the file's own tensors (None: all are)


def unwrap(contents: Any) -> dict[str, Tensor]:
    """The state dict a checkpoint's contents hold, as timm's ``load_state_dict`` takes it: the first wrapper
    key present (EMA weights first), the DDP and ``torch.compile`` prefixes removed; tensors only."""
    if isinstance(contents, dict):
        key = next((k for k in WRAPPER_KEYS if contents.get(k) is not None), None)
        contents = contents[key] if key else contents
    if not isinstance(contents, dict):
        return {}
    state = {}
    for key, value in contents.items():
        if isinstance(key, str) and isinstance(value, Tensor):
            while key.startswith(WRAPPER_PREFIXES):
                key = next(key.removeprefix(p) for p in WRAPPER_PREFIXES if key.startswith(p))
            state[key] = value
    return state


def file_source(model: nn.Module, path: Path, custom_load: bool, what: str = 'the file') -> Source:
    """``model``'s tensors (the checkpoint's model at its own configuration, as timm loaded it) read back from
    the checkpoint at ``path``, through whichever known layout reads the most of them back."""
    problem = checkpoint_file_problem(path, custom_load)
    if problem:   # vetted before the run; a file changed since is not read
        return _timm_only(model, f'{what} {path} {problem}')
    return read_back(model, unwrap(read_checkpoint(path, custom_load)), what)


def checkpoint_source(checkpoint: 'Checkpoint', model: nn.Module) -> Source:
    """The source of a real checkpoint (a :class:`harness.checkpoints.store.Checkpoint` without a synthesized
    reference): its file, or the hub's file in the local cache."""
    if checkpoint.file is not None:
        return file_source(model, checkpoint.file, checkpoint.custom_load)
    return hub_source(model)


def hub_source(model: nn.Module) -> Source:
    """As :func:`file_source`, for the file timm loaded a ``hub`` checkpoint from: found in the local Hugging
    Face or torch hub cache (nothing is downloaded)."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    path = hub_file(cfg)
    if path is None:
        return _timm_only(model, f'the hub file of {cfg.get("hf_hub_id") or cfg.get("url") or "the model"} is '
                                 f'not in the local cache')
    return file_source(model, path, bool(cfg.get('custom_load')), what='the hub file')


def hub_file(cfg: dict[str, Any]) -> Path | None:
    """Where timm's hub download of a pretrained config sits in the local cache, or None: the Hugging Face
    cache (safetensors first, as timm tries them) or torch hub's ``checkpoints`` folder for a ``url``."""
    if cfg.get('hf_hub_id'):
        from huggingface_hub import try_to_load_from_cache
        repo, _, revision = cfg['hf_hub_id'].partition('@')
        names = ('model.safetensors', cfg.get('hf_hub_filename') or 'pytorch_model.bin', 'pytorch_model.bin',
                 'open_clip_model.safetensors', 'open_clip_pytorch_model.bin')
        for name in dict.fromkeys(names):
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
    if cfg.get('url'):
        from urllib.parse import urlparse
        path = Path(torch.hub.get_dir()) / 'checkpoints' / Path(urlparse(cfg['url']).path).name
        return path if path.is_file() else None
    return None


def read_back(model: nn.Module, saved: StateDict, what: str = 'the file') -> Source:
    """``model``'s floating-point tensors read back from ``saved`` (an unwrapped checkpoint); the rest from
    ``model`` itself, named in the note.

    A file holding every tensor under timm's own name and shape is timm's layout, read as it is. Otherwise each
    known layout is written for a meta-device copy of the model (names and shapes, no values), and the one
    holding the most of what ``saved`` holds is inverted by tracing, the costly part, for that layout only."""
    from harness.checkpoints.origins import origins
    layouts = {name: origin for name, origin in origins().items() if origin.convert is not None}
    own = _state(model)
    floats = [k for k, v in own.items() if v.is_floating_point()]
    if all(k in saved and saved[k].shape == own[k].shape for k in floats):
        best_name, best = 'timm', {k: saved[k] for k in floats}
    else:   # the layout holding most of the file, chosen on a meta copy; only it is traced
        shaped = _copy_with(model, lambda t: torch.empty_like(t, device='meta'))
        held = {name: _held(_written(layout, shaped)[0], saved) for name, layout in layouts.items()}
        best_name, best = max(held, key=held.get), {}
        if held[best_name]:
            traced, trace = _traced(model)
            best = _invert(*_written(layouts[best_name], traced), trace, saved)
    if not best:
        return _timm_only(model, f'{what} is in none of the layouts the harness can read back ({", ".join(layouts)})')
    tensors = {k: best[k].to(v.dtype) if k in best else v for k, v in own.items()}
    rest = [k for k in floats if k not in best]
    note = None if not rest else (
        f'{len(rest)} of {len(floats)} tensors are not read back from {what} ({best_name} layout) and are taken '
        f"from timm's own load, so reload and fidelity start from timm there: {', '.join(rest[:8])}"
        + (' ...' if len(rest) > 8 else ''))
    return Source(tensors, len(best), note)


def _timm_only(model: nn.Module, why: str) -> Source:
    return Source(_state(model), 0, f"{why}: the reference is timm's own load at the native size, so reload "
                                    f'compares nothing and fidelity starts from what timm loaded')


def _state(model: nn.Module) -> StateDict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _written(layout, traced: nn.Module) -> tuple[StateDict, StateDict]:
    """What ``layout`` writes for the traced model (floating-point tensors, unwrapped) and the timm state dict
    it says a loader recovers; empty where the model does not fit the layout."""
    from harness.checkpoints.origins import LayoutError
    try:
        contents, expected = layout.convert(traced)
    except LayoutError:
        return {}, {}
    return {k: v for k, v in unwrap(contents).items() if v.is_floating_point() and v.numel()}, expected


def _held(written: StateDict, saved: StateDict) -> int:
    """How many of the layout's written tensors ``saved`` holds, under the same name and shape."""
    return sum(k in saved and saved[k].shape == v.shape for k, v in written.items())


def _invert(written: StateDict, expected: StateDict, trace: '_Trace', saved: StateDict) -> StateDict:
    """The model's tensors a layout stores as copies (``written``, ``expected``: what it wrote for the traced
    model), read from ``saved`` where it holds them at the layout's shape. An id is recognised by its value,
    tensor by tensor (no sort, no concatenation): its index is ``(value - base) // stride``, confirmed by its
    offset."""
    total = len(trace.offsets)
    where = torch.full((total,), -1, dtype=torch.long)   # index -> position in the layout's tensors, end to end
    copies = torch.zeros(total, dtype=torch.int32)
    names = [k for k in written if k in saved and saved[k].shape == written[k].shape]   # others: not in the file
    starts = torch.tensor([0] + [written[k].numel() for k in names]).cumsum(0)
    for name, start in zip(names, starts.tolist()):
        values = written[name].reshape(-1).double()
        index = torch.div(values - _ID_BASE, _ID_STRIDE, rounding_mode='floor')
        found = (index >= 0) & (index < total)
        index = torch.where(found, index, torch.zeros_like(index)).long()
        found &= values == _ID_BASE + _ID_STRIDE * index.double() + trace.offsets[index]
        where[index[found]] = start + torch.nonzero(found).squeeze(1)
        copies.index_add_(0, index[found], torch.ones(int(found.sum()), dtype=torch.int32))
    where[copies > 1] = -1   # written twice: ambiguous
    out = {}
    for key, (first, shape) in trace.keys.items():
        positions = where[first:first + math.prod(shape)]
        if key not in expected or not torch.equal(expected[key].double(), trace.ids(key)) or (positions < 0).any():
            continue   # derived by the layout's conversion, dropped, ambiguous, or not in the file
        owner = torch.searchsorted(starts, positions, right=True) - 1
        values = torch.empty(positions.shape, dtype=torch.float64)
        for i in owner.unique().tolist():
            mine = owner == i
            values[mine] = saved[names[i]].reshape(-1)[positions[mine] - starts[i]].double()
        out[key] = values.reshape(shape)
    return out


@dataclass(frozen=True)
class _Trace:
    """The traced model's ids: per floating-point key, its first index and shape; per index, its offset."""
    offsets: Tensor
    keys: dict[str, tuple[int, tuple[int, ...]]]

    def ids(self, key: str) -> Tensor:
        first, shape = self.keys[key]
        n = math.prod(shape)
        return (_ID_BASE + _ID_STRIDE * torch.arange(first, first + n, dtype=torch.float64)
                + self.offsets[first:first + n]).reshape(shape)


def _traced(model: nn.Module) -> tuple[nn.Module, _Trace]:
    """A copy of ``model`` whose floating-point tensors hold distinct integer ids (float64), and the ids."""
    keys, first = {}, 0
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            keys[key] = (first, tuple(tensor.shape))
            first += tensor.numel()
    trace = _Trace(torch.randint(0, _ID_STRIDE, (first,), generator=torch.Generator().manual_seed(0),
                                 dtype=torch.float64), keys)
    by_tensor = {id(t): trace.ids(k) for k, t in model.state_dict(keep_vars=True).items() if k in keys}
    return _copy_with(model, lambda t: by_tensor.get(id(t))), trace


def _copy_with(model: nn.Module, value) -> nn.Module:
    """A deep copy of ``model`` in which each floating-point parameter and buffer ``t`` is ``value(t)`` (copied
    as it is where that is None, as buffers outside the state dict): the model's own weights are never copied
    (the meta device, or trace ids)."""
    memo = {}
    for tensor in (*model.parameters(), *model.buffers()):
        new = value(tensor) if tensor.is_floating_point() else None
        if new is not None:
            memo[id(tensor)] = nn.Parameter(new, requires_grad=False) if isinstance(tensor, nn.Parameter) else new
    return copy.deepcopy(model, memo)
