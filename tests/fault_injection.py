"""A pytest plugin that makes timm misbehave at one input size, for tests/test_faults.py.

``harness run MATRIX -p tests.fault_injection`` loads it in the controller and in every xdist worker (their
PYTHONPATH must reach the repository). The environment, which workers inherit, says what goes wrong:

- ``HARNESS_FAULT``: ``segfault``, ``hang`` (a sleep in Python), ``native_hang`` (a C call that holds the GIL,
  which no Python thread can interrupt), ``stop`` (the worker sends itself SIGSTOP) or ``out_of_memory``
- ``HARNESS_FAULT_SIZE``: the side of the square input at which every patch embedding misbehaves (checks
  and timing alike: every ViT forward pass goes through it)
"""
from __future__ import annotations

import ctypes
import os
import signal
import time

import torch

FAULT_ENV, SIZE_ENV = 'HARNESS_FAULT', 'HARNESS_FAULT_SIZE'


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def hang() -> None:
    time.sleep(3600)


def native_hang() -> None:
    ctypes.PyDLL(None).sleep(3600)   # libc's sleep through PyDLL, which keeps the GIL for the call


def stop() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def out_of_memory() -> None:
    torch.empty(2 ** 42)   # 16 TiB: the CPU allocator raises "can't allocate memory"


FAULTS = {fault.__name__: fault for fault in (segfault, hang, native_hang, stop, out_of_memory)}


def pytest_configure(config) -> None:
    if os.environ.get(FAULT_ENV):
        _inject(FAULTS[os.environ[FAULT_ENV]], int(os.environ[SIZE_ENV]))


def _inject(fault, size: int) -> None:
    from timm.layers import PatchEmbed
    original = PatchEmbed.forward

    def forward(self, x, *args, **kwargs):
        if tuple(x.shape[-2:]) == (size, size):
            fault()
        return original(self, x, *args, **kwargs)
    PatchEmbed.forward = forward
