"""``harness findings RUN_OR_COMPARE``: the failed cases of a run, or the regressed ones of a compare, grouped by
root cause (:mod:`harness.findings`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import EXIT_OK, EXIT_REGRESSION, UsageError, check_writable


def add_parser(commands) -> None:
    findings = commands.add_parser('findings', help='group the failed cases of a run, or the regressed cases of a '
                                   'compare, by root cause: findings.json and findings.md')
    findings.set_defaults(handler=main)
    findings.add_argument('source', type=Path, metavar='RUN_OR_COMPARE',
                          help='a run folder (results.jsonl) or a compare folder (compare.json)')
    findings.add_argument('--out', type=Path, help='output folder (default: RUN_OR_COMPARE)')
    findings.add_argument('--xfailed', action='store_true',
                          help='group the xfailed cases too: the defects the matrices mark as known')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness.findings import FindingsInputError, counted, findings_of, write_findings
    if not args.source.exists():
        raise UsageError(f'{args.source}: no such folder; expected a run folder (harness run) or a compare folder '
                         f'(harness compare)')
    out = args.out or (args.source if args.source.is_dir() else args.source.parent)
    check_writable(out, '--out' if args.out else f'{out} (the default --out, the input folder)')
    try:
        report = findings_of(args.source, xfailed=args.xfailed)
    except FindingsInputError as e:
        raise UsageError(str(e)) from None
    json_path, markdown = write_findings(report, out)
    print(f'findings: {report.summary()}')
    for finding in report.findings:
        print(f'  {finding.id}  {counted(len(finding.case_ids), "case"):>9}  {finding.title}')
    print(f'report: {markdown}  (for machines: {json_path})')
    return EXIT_REGRESSION if report.findings else EXIT_OK
