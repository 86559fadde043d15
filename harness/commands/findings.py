"""``harness findings RUN_OR_COMPARE``: the failed cases of a run, or the regressed ones of a compare, grouped by
root cause (:mod:`harness.findings`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import EXIT_OK, EXIT_REGRESSION, UsageError, check_writable

DESCRIPTION = """\
Group the failed cases of a run, or the regressed cases of a compare, by root cause: one finding per family,
failed check, differing tensor (block indices as *) and trigger (rectangular source window, transposed grid,
patch change, ...), each with a stable id, the architectures and cases it covers, and the harness repro command
of its smallest case. Writes findings.json and findings.md.

examples:
  harness findings reports/zoo-swin --xfailed
  harness findings reports/vit-0.9.16

exit codes: 0 no finding, 1 findings, 2 bad input
"""


def add_parser(commands) -> None:
    findings = commands.add_parser('findings', help='group the failed cases of a run, or the regressed cases of a '
                                   'compare, by root cause: findings.json and findings.md',
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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
