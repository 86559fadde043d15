"""``harness findings RUN_OR_COMPARE``: the failed cases of a run, or the regressed ones of a compare, grouped by
root cause (:mod:`harness.analysis.findings`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from harness.commands.common import EXIT_OK, EXIT_REGRESSION, UsageError, check_writable

DESCRIPTION = """\
Group the failed cases of a run, or the regressed cases of a compare, by root cause: one finding per family,
failed check, kind of differing tensor (relative_position_bias_table, wherever it sits) and trigger (window
change, rectangular grid, patch change, padded input, ...). A path that mishandles a non-square source
(rectangular source grid or window, transposed grid) is one finding per family and path whatever check shows
it, listing its symptoms. Each finding has a stable id, the architectures and cases it covers, and the harness
repro command of its smallest case. Writes findings.json and findings.md.

With --previous (an earlier findings.json, e.g. last night's), each finding is marked "new finding", "new
symptom" (still open, with a symptom the earlier one lacked) or "still open" (the same id: the same
signature), and the earlier findings this one no longer has are listed as gone.

examples:
  harness findings reports/zoo-swin --xfailed
  harness findings reports/vit-0.9.16
  harness findings nightly-out/main/zoo-sweep --previous last-night/main/zoo-sweep/findings.json

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
    findings.add_argument('--previous', type=Path, metavar='FINDINGS_JSON',
                          help='an earlier findings.json (or its folder): mark each finding new, open with a new '
                               'symptom or still open, and list the earlier ones gone')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness.analysis.findings import CHANGE_WORDS, FindingsInputError, counted, findings_of, write_findings
    from harness.analysis.findings_previous import mark_changes, read_previous
    if not args.source.exists():
        raise UsageError(f'{args.source}: no such folder; expected a run folder (harness run) or a compare folder '
                         f'(harness compare)')
    out = args.out or (args.source if args.source.is_dir() else args.source.parent)
    check_writable(out, '--out' if args.out else f'{out} (the default --out, the input folder)')
    if args.previous and not args.previous.exists():
        raise UsageError(f'--previous: {args.previous}: no such file; expected the findings.json of an earlier '
                         f'harness findings')
    try:
        report = findings_of(args.source, xfailed=args.xfailed)
        if args.previous:
            mark_changes(report, read_previous(args.previous), str(args.previous))
    except FindingsInputError as e:
        raise UsageError(str(e)) from None
    json_path, markdown = write_findings(report, out)
    print(f'findings: {report.summary()}')
    for finding in report.findings:
        change = f'  {CHANGE_WORDS[finding.change]:<11}' if finding.change else ''
        print(f'  {finding.id}  {counted(len(finding.case_ids), "case"):>9}{change}  {finding.title}')
    for gone in report.gone:
        print(f'  {gone.id}  {"":>9}  {"gone":<11}  {gone.title}')
    print(f'report: {markdown}  (for machines: {json_path})')
    return EXIT_REGRESSION if report.findings else EXIT_OK
