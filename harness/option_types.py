"""The types and bounds of the options `harness run` and the pytest plugin both take, in one place: argparse
types (pytest's ``addoption`` takes the same), each refusing a bad value with ``expected <...>, got <text>``.

Imports neither torch nor timm: the pytest plugin uses them in the xdist controller.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an int >= 1, got {text!r}')
    return value


def bounded_float(accepts: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a float that ``accepts`` takes (nan never does), else ``expected <...>, got <text>``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}')
        return value
    return parse


case_timeout_s = bounded_float(lambda v: v >= 0, 'seconds >= 0 (0 = no limit)')
max_cv = bounded_float(lambda v: v > 0, 'a fraction > 0')


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` with 1 <= K <= N, as (K, N)."""
    index, _, count = text.partition('/')
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ValueError(f'expected K/N with 1 <= K <= N, such as 2/4; got {text!r}')
    return int(index), int(count)
