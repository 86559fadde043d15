"""What an exception raised inside timm means for a case's verdict.

The same exception type can be a finding about timm or a limit of the machine, and the verdict must not
confuse them: out of memory is ``resource`` (never a timm regression), an exception raised inside one of
timm's resampling functions is a ``resize`` failure, anything else is judged by the stage it stopped.
"""
from __future__ import annotations

import errno
import re
import traceback
from pathlib import Path

# what allocators say when they run out: CUDA's OutOfMemoryError, the CPU allocator's RuntimeError
_OUT_OF_MEMORY_WORDS = ("can't allocate memory", 'out of memory', 'not enough memory', 'failed to allocate')
# timm's resampling entry points are all named so: resample_abs_pos_embed, resample_patch_embed,
# resize_rel_pos_bias_table, resample_abs_pos_embed_nhwc, ...
_RESAMPLING_PREFIXES = ('resample', 'resize')
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_out_of_memory(error: BaseException) -> bool:
    import torch  # here: the controller asks is_disk_full without importing torch
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(words in text for words in _OUT_OF_MEMORY_WORDS)


def is_disk_full(error: BaseException) -> bool:
    """A write refused for want of space: the disk (or the user's quota) is full, or a file reached the size
    limit of the process (``ulimit -f``). Writers wrap the ``OSError``: torch.save into a Python file raises a
    RuntimeError whose context it is, safetensors a SafetensorError that names it as ``(os error 28)``."""
    seen: BaseException | None = error
    for _ in range(8):   # the exception and what it was raised from
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        match = re.search(r'\(os error (\d+)\)', str(seen))
        if match and int(match.group(1)) in _DISK_FULL_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# what huggingface_hub raises when it cannot reach the hub and holds no cached copy (with HF_HUB_OFFLINE: the latter)
_NO_HUB = ('LocalEntryNotFoundError', 'OfflineModeIsEnabled')


def needs_network(error: BaseException) -> bool:
    """Whether the exception (or one it came from) says the hub could not be reached: timm went for weights the
    harness did not give it (a hybrid ViT builds its ResNet backbone ``pretrained=True``, from the hub)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionError) or type(seen).__name__ in _NO_HUB:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def raised_while_resampling(error: BaseException) -> bool:
    """Whether the exception came out of one of timm's resampling functions."""
    import timm
    timm_root = Path(timm.__file__).parent
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.name.startswith(_RESAMPLING_PREFIXES) and Path(frame.filename).is_relative_to(timm_root):
            return True
    return False


def describe(error: BaseException, limit: int = 12) -> str:
    """``Type: message``, cut to ``limit`` lines (timm's size-mismatch messages list every tensor)."""
    lines = f'{type(error).__name__}: {error}'.strip().splitlines()
    more = [f'... ({len(lines) - limit} more lines)'] if len(lines) > limit else []
    return '\n'.join(lines[:limit] + more)
