"""``harness compare BASE NEW``: two runs case by case (:mod:`harness.analysis.compare`)."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.analysis.compare import CompareSpec
from harness.commands.common import compare_runs, writable_out
from harness.option_types import bounded_float

DESCRIPTION = """\
Compare two runs case by case (joined by matrix and case id), in the manner of asv compare.

change: regressed (passed/xfailed/unsupported -> failed/xpassed, or passed -> unsupported), fixed (the
  reverse), outputs_changed (same status; the output fingerprint or a check figure moved beyond
  --outputs-atol), unchanged, new, removed, not_comparable (error or resource on either side).
timing_change: slower/faster when the timed passes differ by a two-sided Mann-Whitney U test at --alpha AND
  the median ratio is beyond --factor; noisy when beyond the factor but not significant; same;
  not_comparable when device name, dtype, batch size, torch or TF32/cuDNN settings differ, or a run has no
  run.json.
"""

EPILOG = """\
Writes compare.md (regressions first) and compare.json (every case), prints a summary, and appends
compare.md to $GITHUB_STEP_SUMMARY when that is set.

examples:
  harness compare reports/vit-1.0.30 reports/vit-1.0.31
  harness compare base/results.jsonl new/results.jsonl --factor 1.05 --out compare/

exit codes:
  0    nothing regressed or got slower
  1    some case regressed, got slower, or became an error
  2    bad input or usage, or a side that is not a finished run: results empty, garbage or cut short, a
       record with an unknown status or a wrong-typed field, a run.json without finished_at
"""


def add_parser(commands) -> None:
    compare = commands.add_parser('compare', help='compare two runs: regressions, fixes, output and timing changes',
                                  description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.set_defaults(handler=main)
    compare.add_argument('base', type=Path, help='the earlier run: a run folder or its results.jsonl')
    compare.add_argument('new', type=Path, help='the later run, the same way')
    compare.add_argument('--out', type=Path, metavar='DIR',
                         help="folder for compare.md and compare.json (default: NEW's folder)")
    compare.add_argument('--factor', type=bounded_float(lambda v: 1 <= v < math.inf, 'a ratio >= 1 such as 1.1'),
                         default=1.1, help='a timing change needs a median ratio beyond this (default: 1.1, i.e. 10%%)')
    compare.add_argument('--alpha', type=bounded_float(lambda v: 0 < v < 1, 'a probability between 0 and 1 such as '
                                                                            '0.002'),
                         default=0.002, help="... and a two-sided Mann-Whitney U p-value below this (default: 0.002)")
    compare.add_argument('--outputs-atol', type=bounded_float(lambda v: 0 <= v < math.inf, 'a tolerance >= 0 such '
                                                                                           'as 1e-5'),
                         default=1e-5, metavar='X',
                         help='an output fingerprint or check figure moving more than this is outputs_changed '
                              '(default: 1e-5)')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    out = writable_out(args.out, args.new if args.new.is_dir() else args.new.parent, "the new run's folder")
    return compare_runs(args.base, args.new, out, CompareSpec(args.factor, args.alpha, args.outputs_atol))
