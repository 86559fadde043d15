"""harness.runtime.preflight: --device cuda asked of the CUDA driver without torch, refusing only where it surely sees
no device (a machine with a GPU must never be refused here: the worker's torch check decides the rest)."""
from __future__ import annotations

import ctypes

import pytest

from harness.commands.common import UsageError
from harness.runtime import preflight


class Driver:
    """libcuda's two calls the check makes: cuInit's status, then the device count it reports."""

    def __init__(self, init_status: int, count: int = 0):
        self.init_status, self.count = init_status, count

    def cuInit(self, flags: int) -> int:
        return self.init_status

    def cuDeviceGetCount(self, count) -> int:
        count._obj.value = self.count
        return 0


@pytest.mark.parametrize('driver, refused', [
    (Driver(0, count=1), None),                                           # a GPU
    (Driver(preflight.CUDA_ERROR_NO_DEVICE), 'cuInit: CUDA_ERROR_NO_DEVICE'),
    (Driver(0, count=0), 'cuDeviceGetCount: 0'),                          # CUDA_VISIBLE_DEVICES=''
    (Driver(999), None),                                                  # an unknown error: torch decides
    (None, 'no CUDA driver on this machine'),                             # no libcuda at all
], ids=['gpu', 'no-device', 'none-visible', 'unknown-error', 'no-driver'])
def test_cuda_is_refused_only_where_the_driver_surely_sees_no_device(monkeypatch, driver, refused):
    def load(name):
        if driver is None:
            raise OSError(f'{name}: cannot open shared object file')
        return driver
    monkeypatch.setattr(ctypes, 'CDLL', load)
    problem = preflight.cuda_driver_problem()
    assert problem is None if refused is None else refused in problem
    if refused:
        with pytest.raises(UsageError, match=r'^--device cuda: .*; expected --device cpu or a machine with a GPU$'):
            preflight.check_device('cuda')
    preflight.check_device('cpu')   # no problem, whatever the driver says
