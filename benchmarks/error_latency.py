"""How long ``harness run`` takes to refuse bad input that it answers before any worker starts
(:mod:`harness.preflight`): the figures behind README's "Command line" promise.

Each of three mistakes is run ``--repeats`` times as a fresh process (interpreter start and imports included);
each must exit 2 with one ``error:`` line. Prints each one's median wall time and the 1-minute load average
before and after (the figures grow with a machine's load: compare them on an idle one).

- ``--device cuda`` on a machine without a GPU (skipped where there is one): no timm import;
- a matrix without ``origins:``: validated against timm's models, so timm is imported;
- ``-k`` matching no case: the case ids come from the validated matrix, so timm is imported.

    python benchmarks/error_latency.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import HARNESS, environment

TINY = '''name: latency
models: [{name: vit_small_patch14_dinov2, embed_dim: 32, depth: 1, num_heads: 2, img_size: 28}]
origins: [timm]
sizes: [42]
'''


def refusal_s(command: list[str]) -> float:
    """Wall seconds of a ``harness`` command that must refuse its input in one ``error:`` line, exit 2."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    lines = done.stderr.strip().splitlines()
    if done.returncode != 2 or len(lines) != 1 or not lines[0].startswith('error: ') or done.stdout.strip():
        sys.exit(f'{" ".join(command)}: expected one error: line and exit 2, got exit {done.returncode}:\n'
                 f'{done.stdout[-2000:]}{done.stderr[-2000:]}')
    return elapsed


def mistakes(folder: Path) -> dict[str, list[str]]:
    good, bad = folder / 'tiny.yaml', folder / 'no-origins.yaml'
    good.write_text(TINY)
    bad.write_text(TINY.replace('origins: [timm]\n', ''))
    run = [*HARNESS, 'run', '--out', str(folder / 'out')]
    commands = {'schema error (no origins:), timm imported': [*run, str(bad)],
                '-k matching no case, timm imported': [*run, str(good), '-k', 'no_such_case']}
    from harness.preflight import cuda_driver_problem
    if cuda_driver_problem():
        commands = {'--device cuda without a GPU, no timm import': [*run, str(good), '--device', 'cuda'],
                    **commands}
    return commands


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args()
    print(environment('cpu'))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        for name, command in mistakes(Path(folder)).items():
            times = [refusal_s(command) for _ in range(args.repeats)]
            print(f'{name:45s} median {statistics.median(times):5.2f} s  (of {", ".join(f"{t:.2f}" for t in times)})')
    print(f'1-minute load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on '
          f'{len(os.sched_getaffinity(0))} cores')


if __name__ == '__main__':
    main()
