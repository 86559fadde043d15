"""Findings against the previous ones (the last nightly's findings.json): which are new, which still open, which
gone. A finding's id is a hash of its signature (:class:`harness.analysis.findings.Signature`), so the same
defect has the same id night after night; a finding whose cases changed (another architecture joined it) is still
open."""
from __future__ import annotations

import json
from pathlib import Path

from harness.analysis.findings import FINDINGS_JSON, FindingsInputError, FindingsReport, Gone
from harness.store import schema


def read_previous(path: Path) -> dict[str, str]:
    """A findings.json (or the folder holding it), as harness findings writes: its findings' ids and titles."""
    file = path / FINDINGS_JSON if path.is_dir() else path
    expected = f'expected the {FINDINGS_JSON} of an earlier harness findings (schema {schema.FINDINGS.version})'
    try:
        body = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise FindingsInputError(f'{file}: not readable JSON ({e}); {expected}') from None
    if not _current(body) or not isinstance(body.get('findings'), list):
        raise FindingsInputError(f'{file}: schema, findings: {expected}')
    body = schema.upgrade(schema.FINDINGS, body)
    previous = {}
    for index, finding in enumerate(body['findings']):
        if not isinstance(finding, dict) or not all(isinstance(finding.get(k), str) for k in ('id', 'title')):
            raise FindingsInputError(f'{file}: findings[{index}]: expected an object with a string id and title; '
                                     f'{expected}')
        previous[finding['id']] = finding['title']
    return previous


def _current(body: object) -> bool:
    """A findings.json object this harness reads (harness.store.schema): a version it knows, or none (version 1)."""
    try:
        return isinstance(body, dict) and schema.version_of(schema.FINDINGS, body) <= schema.FINDINGS.version
    except schema.SchemaError:
        return False


def mark_changes(report: FindingsReport, previous: dict[str, str], label: str) -> FindingsReport:
    """``report`` with each finding marked new or still open against ``previous`` (:func:`read_previous`), and
    the previous findings it no longer has listed as gone."""
    for finding in report.findings:
        finding.change = 'open' if finding.id in previous else 'new'
    current = {finding.id for finding in report.findings}
    report.previous = label
    report.gone = [Gone(id, title) for id, title in sorted(previous.items(), key=lambda item: item[1])
                   if id not in current]
    return report
