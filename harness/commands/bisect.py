"""``harness bisect MATRIX --good V --bad V``: the adjacent releases where cases change
(:mod:`harness.analysis.bisect`)."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from harness.cache import default_cache_dir
from harness.commands.common import (
    EXIT_OK,
    UsageError,
    default_out,
    keyword_expression,
    owned_out,
    timm_release,
    writable_out,
)
from harness.spec.matrix_file import read_matrix_file
from harness.store.atomic_file import write_atomically

DESCRIPTION = """\
Find the two adjacent timm releases between which the selected cases' statuses change.

Each release tried runs `harness run MATRIX -k EXPR --timm VERSION --no-timing` into <out>/<version>; a
release is good when its statuses equal those at --good. Binary search over the releases between --good and
--bad, so about log2(releases) + 2 installs; --good may be the newer release (to find a fix). A release that
will not install, or where a selected case is unsupported, is skipped (as git bisect skip). Writes
<out>/bisect.json: older, newer, older_statuses, newer_statuses, untested and every release tried.

example:
  harness bisect matrices/vit.yaml -k "open_clip and patch8 and create" --good 1.0.31 --bad 0.9.16

exit codes: 0 found; 2 bad input, or the search could not start (equal outcomes at both ends)
"""


def add_parser(commands) -> None:
    bisect = commands.add_parser('bisect', help='find the adjacent timm releases between which cases change',
                                 description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    bisect.set_defaults(handler=main)
    bisect.add_argument('matrix', type=Path, help='YAML matrix')
    bisect.add_argument('-k', metavar='EXPR', type=keyword_expression,
                        help='the cases to follow, a pytest -k expression (default: all)')
    bisect.add_argument('--good', required=True, type=timm_release, metavar='VERSION',
                        help='a release whose outcome is the good one (older for a regression, newer for a fix)')
    bisect.add_argument('--bad', required=True, type=timm_release, metavar='VERSION',
                        help='a release with another outcome')
    bisect.add_argument('--releases', metavar='V1,V2,...',
                        help='bisect among these releases only (default: every final timm release on the package '
                             'index between --good and --bad, listed with pip index versions and cached a day)')
    bisect.add_argument('--out', type=Path, metavar='DIR',
                        help='folder for bisect.json and one run folder per release (default: reports/<matrix '
                             'name>-bisect)')
    bisect.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness.analysis.bisect import BisectError, between, bisect, index_releases, run_outcome, to_json
    raw = read_matrix_file(args.matrix)
    out = writable_out(args.out, default_out(args.matrix, raw, '-bisect'), 'from the matrix name')
    cache = args.cache or default_cache_dir()

    def outcome(version: str) -> dict[str, str]:
        print(f'bisect: timm {version} ...', flush=True)
        statuses = run_outcome(args.matrix, args.k, version, out / version, cache)
        print(f'bisect: timm {version}: {_status_counts(statuses)}', flush=True)
        return statuses

    with owned_out(out, '--out'):
        try:
            listed = [v.strip() for v in args.releases.split(',')] if args.releases else index_releases(cache)
            result = bisect(between(listed, args.good, args.bad), outcome)
        except BisectError as e:
            raise UsageError(str(e)) from None
        write_atomically(out / 'bisect.json', json.dumps(to_json(result), indent=2) + '\n')
    untested = f' (untested between them: {", ".join(result.untested)})' if result.untested else ''
    print(f'bisect: the outcome changes between timm {result.older} ({_status_counts(result.older_statuses)}) and '
          f'{result.newer} ({_status_counts(result.newer_statuses)}){untested}; {len(result.tested)} releases '
          f'tried; {out / "bisect.json"}')
    return EXIT_OK


def _status_counts(statuses: dict[str, str]) -> str:
    return ', '.join(f'{n} {status}' for status, n in sorted(Counter(statuses.values()).items()))
