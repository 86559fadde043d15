"""Findings against the previous ones (the last nightly's findings.json): which are new, which still open, which
gone. A finding's id is a hash of its signature (:class:`harness.analysis.findings.Signature`), so the same
defect has the same id night after night; a finding whose cases changed (another architecture joined it) is still
open."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.analysis.findings import FINDINGS_JSON, FindingsInputError, FindingsReport, Gone
from harness.store import schema


@dataclass(frozen=True)
class Previous:
    """A finding of an earlier findings.json: its title, and its symptoms where it listed them (None: a findings.json
    from before symptoms were recorded, against which no symptom is new)."""
    title: str
    symptoms: frozenset[str] | None = None


def read_previous(path: Path) -> dict[str, Previous]:
    """A findings.json (or the folder holding it), as harness findings writes: its findings by id."""
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
        listed = finding.get('symptoms')
        previous[finding['id']] = Previous(finding['title'], frozenset(listed) if isinstance(listed, dict) else None)
    return previous


def _current(body: object) -> bool:
    """A findings.json object this harness reads (harness.store.schema): a version it knows, or none (version 1)."""
    try:
        return isinstance(body, dict) and schema.version_of(schema.FINDINGS, body) <= schema.FINDINGS.version
    except schema.SchemaError:
        return False


def mark_changes(report: FindingsReport, previous: dict[str, Previous], label: str) -> FindingsReport:
    """``report`` with each finding marked new, still open, or open with a new symptom against ``previous``
    (:func:`read_previous`), and the previous findings it no longer has listed as gone. A second defect of a family
    and path that mishandles a non-square source joins that finding (``SOURCE_SHAPES`` in
    :mod:`harness.analysis.findings`): a new symptom is how a nightly sees it."""
    for finding in report.findings:
        before = previous.get(finding.id)
        if before is None:
            finding.change = 'new'
            continue
        finding.new_symptoms = [] if before.symptoms is None else [text for text in finding.symptoms
                                                                    if text not in before.symptoms]
        finding.change = 'symptom' if finding.new_symptoms else 'open'
    current = {finding.id for finding in report.findings}
    report.previous = label
    report.gone = [Gone(id, found.title) for id, found in sorted(previous.items(), key=lambda item: item[1].title)
                   if id not in current]
    return report
