"""Which timm releases failed and passed a case, from what a run folder and its neighbours recorded.

A run's own record says how the case went on its release; ``compare.json`` (``harness compare`` writes it into
the new run's folder, ``harness ab`` beside its two runs) and ``bisect.json`` (beside the run folders of
``harness bisect``) say how it went on others. Both are looked for in the run folder and the folder above it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from packaging.version import InvalidVersion, Version

from harness.store import schema

OUTCOMES = {'failed': 'failed', 'xfailed': 'failed', 'passed': 'passed', 'xpassed': 'passed'}


@dataclass(frozen=True)
class Sighting:
    version: str      # the timm release
    status: str       # the case's status on it
    source: str       # the file that says so, relative to the run folder


def sightings(run_dir: Path, record: dict[str, Any]) -> list[Sighting]:
    """Every release the case's status is known on: this run's first, then compare.json's and bisect.json's."""
    found = [Sighting(record.get('timm_version') or '?', record['status'], 'results.jsonl')]
    for folder, prefix in ((run_dir, ''), (run_dir.parent, '../')):
        found += _compared(folder / 'compare.json', f'{prefix}compare.json', record)
        found += _bisected(folder / 'bisect.json', f'{prefix}bisect.json', record['case_id'])
    unique: dict[tuple[str, str], Sighting] = {}
    for sighting in found:
        unique.setdefault((sighting.version, sighting.status), sighting)
    return list(unique.values())


def summary(found: list[Sighting]) -> str:
    """``failed on timm 0.9.16 (results.jsonl); passed on 1.0.3, 1.0.31 (bisect.json)``."""
    groups: dict[str, list[Sighting]] = {}
    for sighting in found:
        groups.setdefault(OUTCOMES.get(sighting.status, sighting.status), []).append(sighting)
    parts = []
    for outcome, group in groups.items():
        versions = ', '.join(sorted({s.version for s in group}, key=_version_key))
        sources = ', '.join(dict.fromkeys(s.source for s in group))
        parts.append(f'{outcome} on {versions} ({sources})')
    return 'timm ' + '; '.join(parts)


def _compared(path: Path, label: str, record: dict[str, Any]) -> Iterator[Sighting]:
    data = _json(path, schema.COMPARE)
    if data is None:
        return
    case = next((c for c in data.get('cases', []) if c.get('case_id') == record['case_id']
                 and c.get('matrix', record.get('matrix')) == record.get('matrix')), None)
    for side in ('base', 'new'):
        version = ((data.get(side) or {}).get('run') or {}).get('timm_version')
        status = case.get(f'{side}_status') if case else None
        if version and status:
            yield Sighting(version, status, label)


def _bisected(path: Path, label: str, case_id: str) -> Iterator[Sighting]:
    data = _json(path, schema.BISECT)
    for tried in (data or {}).get('tested', []):
        status = (tried.get('statuses') or {}).get(case_id)
        if status:
            yield Sighting(tried['version'], status, label)


def _json(path: Path, kind: schema.FileKind) -> dict | None:
    """A JSON object file of ``kind``, read as today's, or None when there is none or it is not one (a damaged
    neighbour says nothing)."""
    try:
        data = json.loads(path.read_text())
        return schema.upgrade(kind, data) if isinstance(data, dict) else None
    except (OSError, ValueError):   # SchemaError is a ValueError
        return None


def _version_key(version: str) -> tuple:
    try:
        return 0, Version(version)
    except InvalidVersion:
        return 1, version
