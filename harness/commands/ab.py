"""``harness ab MATRIX --base V --new V``: two releases in one job, timing rounds interleaved
(:mod:`harness.analysis.ab`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.analysis.compare import CompareSpec
from harness.cache import default_cache_dir
from harness.commands.common import (
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    UsageError,
    compare_runs,
    default_out,
    keyword_expression,
    owned_out,
    timm_source,
    writable_out,
    write_report,
)
from harness.option_types import positive_int, shard
from harness.results import RESULTS_FILE
from harness.runtime.interruption import STOPPED_EXIT_CODES
from harness.spec.matrix_file import read_matrix_file

DESCRIPTION = """\
Run a matrix on two timm releases in one job on one machine and compare them (harness compare).

The checks run as `harness run --timm VERSION --no-timing` for both releases at once, into <out>/base and
<out>/new. Then one timing process per release times each case in --rounds rounds, the releases taking
turns (base, new, new, base, ...), each round a share of the case's budget, while this job holds the
machine's timing lock: a runner whose speed drifts during the job slows both alike. The samples and their
rounds are added to each run's results; <out>/compare.md and compare.json follow. -k, --shard and --full-size
reach both releases' runs; --no-timing leaves the timing out (the nightly's CPU runner).

examples:
  harness ab matrices/smoke.yaml --base 1.0.30 --new 1.0.31 --out reports/ab
  harness ab matrices/vit.yaml --base 1.0.30 --new 1.0.31 -k "open_clip and create"
  harness ab matrices/zoo-sweep.yaml --base 1.0.31 --new ~/src/timm-main --shard 3/16 --no-timing

exit codes: as harness compare (0 nothing regressed or got slower, 1 otherwise), 2 bad input, 130 interrupted,
143 terminated (SIGTERM)
"""


def add_parser(commands) -> None:
    ab = commands.add_parser('ab', help='two timm releases in one job: checks, interleaved timing rounds, compare',
                             description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ab.set_defaults(handler=main)
    ab.add_argument('matrix', type=Path, help='YAML matrix')
    ab.add_argument('--base', required=True, type=timm_source, metavar='VERSION', help='the release compared against')
    ab.add_argument('--new', required=True, type=timm_source, metavar='VERSION', help='the release under test')
    ab.add_argument('--out', type=Path, metavar='DIR',
                    help='folder for base/, new/ and compare.* (default: reports/<matrix name>-ab)')
    ab.add_argument('--rounds', type=positive_int, default=5, metavar='N',
                    help="timing rounds per case and release, alternating releases, each 1/N of the case's budget "
                         "(default: 5)")
    ab.add_argument('-k', type=keyword_expression, metavar='EXPRESSION',
                    help='only the cases whose id matches, as for harness run (both releases run the same cases)')
    ab.add_argument('--shard', type=shard, metavar='K/N', help='as for harness run')
    ab.add_argument('--full-size', action='store_true',
                    help='as for harness run: zoo entries at their real configuration (both releases)')
    ab.add_argument('--no-timing', action='store_true',
                    help='the checks and the compare only: no interleaved timing rounds')
    ab.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    raw = read_matrix_file(args.matrix)
    out = writable_out(args.out, default_out(args.matrix, raw, '-ab'), 'from the matrix name')
    cache = args.cache or default_cache_dir()
    with owned_out(out, '--out'):
        return _ab(args, out, cache)


def _ab(args: argparse.Namespace, out: Path, cache: Path) -> int:
    from harness.analysis.ab import AbError, interleave, record_samples, release, run_checks, timed_cases
    try:
        releases = [release('base', args.base, out, cache), release('new', args.new, out, cache)]
    except AbError as e:
        raise UsageError(str(e)) from None
    codes = run_checks(args.matrix, releases, cache, args.shard, args.k, args.full_size)
    stopped = [code for code in codes if code in STOPPED_EXIT_CODES]   # Ctrl-C or SIGTERM
    if stopped:
        return stopped[0]
    if any(code not in (EXIT_OK, EXIT_REGRESSION) for code in codes):
        return EXIT_USAGE   # the run said why, in one line
    timing = None if args.no_timing else interleave(args.matrix, releases, timed_cases(releases), args.rounds, cache)
    if timing is not None:
        for r in releases:
            timed = record_samples(r, args.rounds, timing)
            print(f'ab: {timed} cases of timm {r.version} timed in {args.rounds} interleaved rounds')
            write_report(r.out / RESULTS_FILE, r.out)
    return compare_runs(out / 'base', out / 'new', out, CompareSpec())
