"""``harness report RESULTS.jsonl``: the report of a run, written again from its results."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import EXIT_OK, UsageError, write_report
from harness.results import read_results


def add_parser(commands) -> None:
    report = commands.add_parser('report',
                                 help='write report.md, report.html, results.csv and summary.csv from results')
    report.set_defaults(handler=main)
    report.add_argument('results', type=Path, help='a results.jsonl written by harness run')
    report.add_argument('--out', type=Path, help='output folder (default: the folder holding RESULTS)')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    if not args.results.is_file():
        raise UsageError(f'{args.results}: no such results file; expected a results.jsonl written by harness run')
    read_results(args.results)   # garbage in the middle is bad input: say so before the report's slow imports
    write_report(args.results, args.out or args.results.parent)
    return EXIT_OK
