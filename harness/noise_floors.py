"""Default tolerances, derived from the measured noise of a correct timm (``harness/noise_floors.json``).

A check's figure on a correct timm is not zero: the harness's oracle and timm compute the same thing in a
different order (an interpolation, a bias table gathered another way, a forward pass through another route),
so each judged figure has a noise floor, the largest value it takes over the shipped matrices on the current
release for cases that pass (``benchmarks/calibrate.py`` measures it; cases with an ``expect`` entry, real timm
defects, do not count). A default tolerance is :data:`MULTIPLE` times the floor of its figure on its path, so
a deviation an order of magnitude above anything a correct timm produces fails, and nothing a correct timm
produces does. A floor below :data:`RESOLUTION` (float32's unit roundoff, half a unit in the last place at
magnitude 1: a bit-exact copy measures 0) counts as :data:`RESOLUTION`: no tolerance is tighter than a few
float32 roundings (5.96e-7, which keeps ``noop_atol`` under the 1e-6 it was before calibration).

The floors are per device type; the file holds the CPU's (the checks run on the CPU here; no GPU has been
measured). On a device type the file has no floors for, the defaults are :data:`UNCALIBRATED` (the harness's
earlier round numbers, chosen with margin for GPU kernels: TF32 convolutions, other reduction orders) until
``benchmarks/calibrate.py --device cuda`` measures them.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from harness.store import schema

FLOORS_FILE = Path(__file__).with_name('noise_floors.json')
MULTIPLE = 10.0
RESOLUTION = 2.0 ** -24   # float32 unit roundoff, 5.96e-8

# judged figure -> the tolerance derived from it; cosines are floored as 1 - cosine
FIGURE_TOLERANCES = {
    'native_max_abs_diff': 'reload_atol',
    'noop_max_abs_diff': 'noop_atol',
    'fidelity_weights_max_abs_diff': 'fidelity_weights_atol',
    'fidelity_outputs_max_abs_diff': 'fidelity_outputs_atol',
    'parity_max_abs_diff': 'parity_atol',
    'parity_cosine': 'parity_min_cosine',
}
COSINES = ('parity_cosine',)

# the defaults where no floor was measured (another device type): not measured, with room for GPU kernels
UNCALIBRATED = {'reload_atol': 1e-4, 'noop_atol': 1e-6, 'fidelity_weights_atol': 1e-4, 'fidelity_outputs_atol': 1e-3,
                'parity_atol': 1e-3, 'parity_min_cosine': 0.9999}


@dataclass(frozen=True)
class Floor:
    """The largest value of one figure on one path over the cases counted, and the case that set it."""
    value: float
    case: str
    cases: int    # how many cases had the figure


def tolerance(figure: str, floor: float) -> float:
    """The default tolerance for ``figure`` whose noise floor is ``floor`` (for a cosine: 1 - cosine)."""
    limit = float(f'{MULTIPLE * max(floor, RESOLUTION):.3g}')
    return 1.0 - limit if figure in COSINES else limit


@functools.lru_cache(maxsize=None)
def floors(device_type: str) -> dict[str, dict[str, Floor]] | None:
    """``{path: {figure: Floor}}`` measured on ``device_type``; None where nothing was measured there."""
    measured = read_floors_file().get('floors', {}).get(device_type)
    if measured is None:
        return None
    return {path: {figure: Floor(**entry) for figure, entry in figures.items()} for path, figures in measured.items()}


def read_floors_file(path: Path = FLOORS_FILE) -> dict:
    return schema.upgrade(schema.NOISE_FLOORS, json.loads(path.read_text())) if path.exists() else {}


@functools.lru_cache(maxsize=None)
def default_tolerances(path: str, device_type: str) -> dict[str, float]:
    """Every derived tolerance for cases of ``path`` on ``device_type``: from the path's own floor of each
    figure, else (a figure never measured on that path) the largest floor of the figure over all paths; the
    :data:`UNCALIBRATED` values on a device type with no floors."""
    measured = floors(device_type)
    if measured is None:
        return dict(UNCALIBRATED)
    out = {}
    for figure, name in FIGURE_TOLERANCES.items():
        own = measured.get(path, {}).get(figure)
        values = [own.value] if own else [f[figure].value for f in measured.values() if figure in f]
        out[name] = tolerance(figure, max(values)) if values else UNCALIBRATED[name]
    return out
