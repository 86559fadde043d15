"""Does `harness compare` stay quiet when nothing changed? Issue 7 asks for zero `slower`/`faster` between two
runs of one matrix on one machine, timing on, over at least 20 timed cases.

    python benchmarks/compare_noise.py [MATRIX] [--interleaved] [-n 1] [--device cpu] [--cache DIR]

MATRIX defaults to benchmarks/noise.yaml (24 vit_small cases, 70-200 ms CPU passes). Its checkpoints are synthesized
first, then `harness run MATRIX` runs twice, one after the other, and `harness compare` compares the two; with
--interleaved, `harness ab` runs the installed timm release against itself instead (timing rounds alternating
between two processes). Prints the timing verdicts, the spread of the median ratios and the smallest p-value. """
from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import timm
from common import EXIT_CASES_FAILED, HARNESS, cache_dir, environment, harness_run_s, matrix_parser, wall_s, warm_cache

from harness.spec.matrix import load_matrix


def main() -> None:
    parser = matrix_parser(__doc__, Path(__file__).with_name('noise.yaml'), workers='1')
    parser.add_argument('--interleaved', action='store_true', help='harness ab, the release against itself')
    args = parser.parse_args()
    cache = cache_dir(args.cache)
    warm_cache(load_matrix(args.matrix), cache)
    how = 'harness ab, interleaved' if args.interleaved else f'run twice with -n {args.n}'
    print(f'{args.matrix}, {how}; {environment(args.device)}', flush=True)
    with tempfile.TemporaryDirectory(prefix='compare-noise-') as tmp:
        if args.interleaved:
            wall_s([*HARNESS, 'ab', str(args.matrix), '--base', timm.__version__, '--new', timm.__version__,
                    '--out', tmp, '--cache', str(cache)], allowed_codes=(0, EXIT_CASES_FAILED))
        else:
            for name in ('first', 'second'):
                seconds = harness_run_s(args.matrix, Path(tmp) / name, cache, args.device, '-n', args.n)
                print(f'{name} run: {seconds:.1f} s', flush=True)
            subprocess.run([*HARNESS, 'compare', str(Path(tmp) / 'first'), str(Path(tmp) / 'second'), '--out',
                            tmp], stdout=subprocess.DEVNULL)
        cases = json.loads((Path(tmp) / 'compare.json').read_text())['cases']
    timed = [c for c in cases if c['ratio'] is not None]
    verdicts = Counter(c['timing_change'] for c in timed)
    ratios = sorted(c['ratio'] for c in timed)
    print(f'timed cases compared: {len(timed)}; verdicts: {dict(verdicts)}')
    if timed:
        print(f'median ratio {statistics.median(ratios):.3f}, range {ratios[0]:.3f}-{ratios[-1]:.3f}; smallest p '
              f'{min(c["p_value"] for c in timed):.2g}')
    quiet = not (verdicts['slower'] or verdicts['faster'])
    print(f'zero slower/faster over >= 20 timed cases: {"yes" if quiet and len(timed) >= 20 else "NO"}')


if __name__ == '__main__':
    main()
