"""``harness merge OUT SHARD...``: the shards of a run joined into one run folder (:mod:`harness.analysis.merge`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import EXIT_OK, UsageError, check_writable, owned_out, write_report
from harness.results import RESULTS_FILE

EPILOG = """\
example:
  harness merge reports/vit reports/vit-shard-*

exit codes:
  0    merged
  2    the shards are not the whole of one finished run: their run.json differ in timm, torch, device, dtype,
       batch size or matrix; a shard K of N is missing or given twice, or the N differ (N is read from each
       shard's run.json); a folder is no shard, or a shard did not finish; results cut short, empty or not
       records; a case is in two shards"""


def add_parser(commands) -> None:
    merge = commands.add_parser('merge', help='join the shards of a run (harness run --shard K/N) into one run folder',
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.set_defaults(handler=main)
    merge.add_argument('out', type=Path, help='the run folder to write: run.json, results.jsonl and the report')
    merge.add_argument('shards', type=Path, nargs='+', metavar='SHARD', help='the shards\' run folders')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness.analysis.merge import MergeError, merge_runs
    check_writable(args.out, 'OUT')
    with owned_out(args.out, 'OUT'):
        try:
            merged = merge_runs(args.out, args.shards, ['harness', *argv])
        except MergeError as e:
            raise UsageError(str(e)) from None
        print(f'merged {merged} cases from {len(args.shards)} shards into {args.out / RESULTS_FILE}')
        write_report(args.out / RESULTS_FILE, args.out)
    return EXIT_OK
