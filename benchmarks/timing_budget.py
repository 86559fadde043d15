"""Does timing stay within its budget? Issue 6 asks that a run with timing on take at most the checks-only
time plus budget x timed cases.

    python benchmarks/timing_budget.py [MATRIX] [-n 2] [--device cpu] [--cache DIR]

MATRIX defaults to matrices/vit.yaml, run unchanged. Its checkpoints are synthesized first (a warm cache),
then `harness run MATRIX -n N --no-timing` and `harness run MATRIX -n N` run one after the other. The budget
comes from what the timed cases recorded. A case whose minimum number of timed passes alone takes longer
than the budget overruns it; those are counted, so a miss can be told apart from lost time elsewhere.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from common import REPO, cache_dir, environment, harness_run_s, matrix_parser, warm_cache
from tabulate import tabulate

from harness.results import RESULTS_FILE, read_results
from harness.spec.matrix import load_matrix


def main() -> None:
    args = matrix_parser(__doc__, REPO / 'matrices' / 'vit.yaml', workers='2').parse_args()
    cache = cache_dir(args.cache)
    warm_cache(load_matrix(args.matrix), cache)
    print(f'{args.matrix} with -n {args.n}; {environment(args.device)}', flush=True)
    with tempfile.TemporaryDirectory(prefix='timing-budget-') as tmp:
        def run(name: str, *options: str) -> float:
            return harness_run_s(args.matrix, Path(tmp) / name, cache, args.device, '-n', args.n, *options)

        checks_s = run('checks', '--no-timing')
        print(f'checks only: {checks_s:.1f} s', flush=True)
        timed_s = run('timed')
        timed = [r for r in read_results(Path(tmp) / 'timed' / RESULTS_FILE) if r.get('time_samples_ms')]
    budgets = sorted({r['timing_budget_s'] for r in timed})
    allowed_s = checks_s + sum(r['timing_budget_s'] for r in timed)
    overruns = [sum(r['time_samples_ms']) / 1000 - r['timing_budget_s'] for r in timed
                if sum(r['time_samples_ms']) / 1000 > r['timing_budget_s']]
    print(tabulate([
        ['checks only (--no-timing)', f'{checks_s:.1f} s'],
        ['timing on', f'{timed_s:.1f} s'],
        ['timed cases', len(timed)],
        ['budget per case', ', '.join(f'{b:g} s' for b in budgets) or '—'],
        ['timed passes per case', _range([len(r['time_samples_ms']) for r in timed])],
        ['allowed: checks only + budget x timed cases', f'{allowed_s:.1f} s'],
        ['cases whose minimum timed passes overran the budget', f'{len(overruns)} (by {sum(overruns):.1f} s in all)'],
    ], tablefmt='github', headers=['', '']))
    print(f'\ntiming on <= checks only + budget x timed cases: {"yes" if timed_s <= allowed_s else "NO"} '
          f'({timed_s:.1f} s vs {allowed_s:.1f} s)')


def _range(values: list[int]) -> str:
    return f'{min(values)}–{max(values)}' if values else '—'


if __name__ == '__main__':
    main()
