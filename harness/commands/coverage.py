"""``harness coverage``: every architecture of a timm release and what the harness checks for it
(:mod:`harness.analysis.coverage`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cache import default_cache_dir
from harness.commands.common import EXIT_OK, UsageError, in_release_already, rerun_in_release, timm_source

DESCRIPTION = """\
Every architecture of a timm release (default: the installed one) with the family that claims it, its
category, the build paths and checks its cases get, and why it is unknown or fixed-size. Categories:
  oracle               a family resizes it and the harness checks the result against its own resampling
  nothing_to_resample  it accepts a new size as it is (proven by a meta-device forward pass at another size):
                       load, shapes, finiteness, drift and timing
  fixed_size           it takes only its own input size: its cases are unsupported, with the reason
  unknown              no family claims it (the reason column says why)
The zoo column says how the zoo sweep (harness run --zoo GLOB) runs it: miniature, real (its real
configuration) or no, and zoo_reason why it is not a miniature or is left out.
Decided on the meta device, without weights; the full table is cached per release (the first time: about
6 minutes of CPU time, up to 25 minutes on a busy 2-core machine; README: Coverage). Progress goes to stderr,
the table to stdout.
"""


def add_parser(commands) -> None:
    coverage = commands.add_parser('coverage', help='list every architecture of a timm release: its family and what '
                                                    'the harness checks for it', description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    coverage.set_defaults(handler=main)
    coverage.add_argument('--timm', metavar='VERSION', type=timm_source, help='as for harness run')
    coverage.add_argument('--format', choices=('md', 'csv', 'json'), default='md',
                          help='md: a summary and one row per architecture (default); csv; json')
    coverage.add_argument('--models', nargs='+', metavar='PATTERN',
                          help='only architectures matching these glob patterns (e.g. "resnet*"), decided afresh '
                               '(default: every architecture, cached per release)')
    coverage.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    cache = args.cache or default_cache_dir()
    if args.timm and not in_release_already():
        return rerun_in_release(args.timm, cache, argv)
    import timm

    from harness.analysis import coverage

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    if args.models:
        names = coverage.selected(timm.list_models(), args.models)
        if not names:
            raise UsageError(f'--models: {" ".join(args.models)} match no architecture of timm {timm.__version__}')
        rows = coverage.covered(names, say)
    else:
        rows = coverage.release_coverage(cache, say)
    sys.stdout.write(coverage.render(rows, args.format))
    return EXIT_OK
