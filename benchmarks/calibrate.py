"""Measure the noise floor of every judged figure of a correct timm, per path, and write it as the harness's data.

    python benchmarks/calibrate.py [MATRIX ...] [-n 2] [--device cpu] [--cache DIR] [--runs DIR] [--reuse] [--dry-run]

Runs each matrix (default: every shipped one, ``matrices/*.yaml``) with ``harness run --no-timing`` on the installed
timm release, reads ``results.jsonl`` and takes, per path and figure (reload, noop, fidelity weights (on
``dynamic``: the forward-time tensors), fidelity outputs, parity and parity cosine as 1 - cosine), the largest value
over the cases that ``passed``: a case with an ``expect`` entry (a real timm defect: ``xfailed``) or any other
status does not count, nor a case in a half-precision state (``bf16``, ``fp16``: judged at its dtype's resolution,
:func:`harness.states.scaled_tolerances`), nor a parity figure that was not judged (``parity_note``). The floors,
the case that set each, and how they were measured (timm, torch, device, date, matrices) go to
``harness/noise_floors.json`` under the device type, replacing that device type's entry; the default tolerances are
derived from them (``harness.noise_floors``: ``MULTIPLE`` x the floor). Prints the table that README.md's
"Tolerances" section shows.

``--reuse`` reads the results already in ``--runs`` (default ``/tmp/calibrate-runs``) instead of running a
matrix again; ``--dry-run`` prints without writing. Cases are judged with the tolerances in force when they
run: a case that fails under the derived tolerances is listed (``failed``, not counted), which says that its
noise is more than ``MULTIPLE`` times the floor and should be looked at. To measure from scratch (new
matrices or cases), move ``harness/noise_floors.json`` aside first: the uncalibrated defaults then judge.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
from collections import Counter
from pathlib import Path

import timm
import torch
from common import EXIT_CASES_FAILED, HARNESS, REPO, cache_dir, default_device, wall_s

from harness import noise_floors, states
from harness.results import load
from harness.spec.vocabulary import PATHS
from harness.store import schema


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('matrices', nargs='*', type=Path,
                        default=sorted((REPO / 'matrices').glob('*.yaml')))
    parser.add_argument('-n', default='2', help='harness workers')
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--cache', help="checkpoint cache (default: the harness's)")
    parser.add_argument('--runs', type=Path, default=Path('/tmp/calibrate-runs'), help='where the runs go')
    parser.add_argument('--reuse', action='store_true', help='read the results already in --runs')
    parser.add_argument('--dry-run', action='store_true', help='print the floors, write nothing')
    args = parser.parse_args()
    rows, statuses = [], Counter()
    for matrix in args.matrices:
        out = args.runs / matrix.stem
        if not (args.reuse and (out / 'results.jsonl').exists()):
            seconds = wall_s([*HARNESS, 'run', str(matrix), '--no-timing', '-n', args.n, '--device', args.device,
                              '--cache', str(cache_dir(args.cache)), '--out', str(out)],
                             allowed_codes=(0, EXIT_CASES_FAILED))
            print(f'{matrix.name}: ran in {seconds:.0f} s')
        frame = load(out / 'results.jsonl')
        frame.insert(0, 'matrix_file', matrix.name)
        statuses.update(f'{matrix.name} {status}' for status in frame.status)
        rows += frame.to_dict('records')
    floors = measure(rows)
    record = {'device_name': rows[0]['device_name'] if rows else '', 'timm': timm.__version__,
              'torch': torch.__version__, 'python': platform.python_version(),
              'date': datetime.date.today().isoformat(), 'matrices': [m.name for m in args.matrices],
              'cases': sum(statuses.values()), 'counted': sum(n for k, n in statuses.items() if k.endswith(' passed')),
              'not_counted': {k: n for k, n in sorted(statuses.items()) if not k.endswith(' passed')}}
    print(markdown(floors))
    print(f"\n{record['counted']} of {record['cases']} cases counted; not counted: {record['not_counted']}")
    if not args.dry_run:
        write(args.device.split(':')[0], floors, record)
        print(f'written: {noise_floors.FLOORS_FILE.relative_to(REPO)}')


def measure(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """``{path: {figure: {value, case, cases}}}``: each figure's largest value over the passed cases."""
    floors: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row['status'] != 'passed' or states.casts(row.get('state') or states.DEFAULT_STATE):
            continue   # a half-precision case is judged at its dtype's resolution (harness.states), not a floor
        for figure in noise_floors.FIGURE_TOLERANCES:
            if figure.startswith('parity') and not _missing(row.get('parity_note')):
                continue
            value = row.get(figure)
            if _missing(value):
                continue
            value = 1.0 - value if figure in noise_floors.COSINES else float(value)
            entry = floors.setdefault(row['path'], {}).setdefault(figure, {'value': -1.0, 'case': '', 'cases': 0})
            entry['cases'] += 1
            if value > entry['value']:
                entry['value'], entry['case'] = value, f"{row['matrix_file']}: {row['case_id']}"
    return {path: dict(sorted(figures.items())) for path, figures in sorted(floors.items(), key=_path_order)}


def write(device_type: str, floors: dict, record: dict) -> None:
    data = noise_floors.read_floors_file()
    data['about'] = ('Noise floors of a correct timm: per device type, path and judged figure, the largest value '
                     'over the passed cases of the matrices named (cosines as 1 - cosine), and the case that set '
                     'it. Written by benchmarks/calibrate.py; harness/noise_floors.py derives the default '
                     'tolerances from it.')
    data.setdefault('measured', {})[device_type] = record
    data.setdefault('floors', {})[device_type] = floors
    noise_floors.FLOORS_FILE.write_text(json.dumps(schema.stamped(schema.NOISE_FLOORS, data), indent=1,
                                                   sort_keys=False) + '\n')


def markdown(floors: dict) -> str:
    """The table README.md shows: per path and figure, the floor, the case that set it and the tolerance."""
    lines = [f'| path | figure | noise floor | set by | cases | default tolerance ({noise_floors.MULTIPLE:g}x) |',
             '|---|---|---|---|---|---|']
    for path, figures in floors.items():
        for figure, entry in figures.items():
            name = noise_floors.FIGURE_TOLERANCES[figure]
            floor = f"1 - {entry['value']:.3g}" if figure in noise_floors.COSINES else f"{entry['value']:.3g}"
            lines.append(f"| {path} | {figure} | {floor} | {entry['case']} | {entry['cases']} | "
                         f"{name} {noise_floors.tolerance(figure, entry['value']):.9g} |")
    return '\n'.join(lines)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _path_order(item) -> int:
    return PATHS.index(item[0]) if item[0] in PATHS else len(PATHS)


if __name__ == '__main__':
    main()
