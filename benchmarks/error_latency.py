"""How long ``harness run`` takes to refuse bad input that it answers before any worker starts
(:mod:`harness.runtime.preflight`): the figures behind README's "Command line" promise.

Each of four mistakes is run ``--repeats`` times as a fresh process (interpreter start and imports included);
each must exit 2 with one ``error:`` line. Prints each one's median wall time and the 1-minute load average
before and after (the figures grow with a machine's load: compare them on an idle one).

- ``--device cuda`` on a machine without a GPU (skipped where there is one): asked of the CUDA driver;
- a matrix without ``origins:``: found in the YAML alone, before timm is imported;
- a matrix naming a model timm does not have: validated against timm's models, so timm is imported;
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

from common import HARNESS, environment

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
    good, no_origins, unknown = folder / 'tiny.yaml', folder / 'no-origins.yaml', folder / 'unknown-model.yaml'
    good.write_text(TINY)
    no_origins.write_text(TINY.replace('origins: [timm]\n', ''))
    unknown.write_text(TINY.replace('vit_small_patch14_dinov2', 'vit_small_patch14_dinov3000'))
    run = [*HARNESS, 'run', '--out', str(folder / 'out')]
    commands = {'matrix without origins:, no timm import': [*run, str(no_origins)],
                'matrix naming an unknown model, timm imported': [*run, str(unknown)],
                '-k matching no case, timm imported': [*run, str(good), '-k', 'no_such_case']}
    from harness.runtime.preflight import cuda_driver_problem
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
            print(f'{name:46s} median {statistics.median(times):5.2f} s  (of {", ".join(f"{t:.2f}" for t in times)})')
    print(f'1-minute load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on '
          f'{len(os.sched_getaffinity(0))} cores')


if __name__ == '__main__':
    main()
