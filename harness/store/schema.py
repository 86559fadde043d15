"""The schema version of every JSON file the harness writes, and the steps that read an older one as today's.

One home for file layouts, as asv's ``Results.api_version`` and ``update_to_N``: each kind of file
(:data:`KINDS`) names the field holding its version and its upgrade steps, ``steps[n - 1]`` taking version ``n``
to ``n + 1``. Writers stamp the current version (:func:`stamped`); every reader passes what it read through
:func:`upgrade` before anything else, so compatibility code lives here and nowhere else. A file written before
its kind carried a version reads as version 1. A file of a newer harness (a version above this one's) reads as
it is: layouts only ever add fields, which readers ignore.

Imports nothing of the harness: every module that reads or writes a file may import it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

Step = Callable[[Any], Any]
UNRECORDED = 'unrecorded'   # a fact a file of an older harness did not record (run.json's finished_at, schema 1)
# fields older records and run.json carry under another name: old name -> current name
RENAMED_FIELDS = {'timing_precision': 'timing_median_rse'}   # issue 9: `precision` now means amp or cast


class SchemaError(ValueError):
    """A version field that is no version; ``str()`` is ``<field>: expected ..., got ...``."""


@dataclass(frozen=True)
class FileKind:
    name: str
    key: str                    # the field that holds the version
    steps: tuple[Step, ...] = ()   # steps[n - 1]: version n -> n + 1 (asv's update_to_<n + 1>)

    @property
    def version(self) -> int:
        """The version this harness writes."""
        return len(self.steps) + 1


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """Fields under today's names (:data:`RENAMED_FIELDS`); where both names are there, today's wins."""
    upgraded = {k: v for k, v in data.items() if k not in RENAMED_FIELDS}
    for old, new in RENAMED_FIELDS.items():
        if old in data:
            upgraded.setdefault(new, data[old])
    return upgraded


# what a record of an older harness, which lacks a timing setting, was measured with: autocast, neither compiled nor
# channels-last (the settings came with issue 9), at the batch it was configured with (batches were not halved)
MEASURED_BEFORE = {'precision': 'amp', 'compile': False, 'channels_last': False}


def _measured_as_before(record: dict[str, Any]) -> dict[str, Any]:
    """A record's timing settings where it lacks them, as :data:`MEASURED_BEFORE` says."""
    lacking = {name: value for name, value in MEASURED_BEFORE.items() if record.get(name) in (None, '')}
    if record.get('batch_size_used') in (None, '') and record.get('time_samples_ms'):
        lacking['batch_size_used'] = record.get('batch_size')
    return {**record, **lacking}


def _record_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """results.jsonl record 1 -> 2: fields under today's names, and the timing settings it lacks."""
    return _measured_as_before(_renamed(record))


def _finish_unrecorded(run: dict[str, Any]) -> dict[str, Any]:
    """run.json 1 -> 2: schema 1 did not record when a run ended, so its run cannot be told from a killed one:
    it passes as finished, at an unrecorded time (issue 7)."""
    return {**run, 'finished_at': run.get('finished_at') or UNRECORDED}


def _rows(rows: Any) -> dict[str, Any]:
    """A bare JSON list (a kind's version 1) as the object that holds it and can hold a version."""
    return {'rows': rows}


def _files(checksums: Any) -> dict[str, Any]:
    """sha256.json 1 -> 2: the bare ``{file: sha256}`` map under ``files``, beside the version."""
    return {'files': checksums}


RECORD = FileKind('results.jsonl record', 'schema', (_record_to_2,))
RUN = FileKind('run.json', 'results_schema', (_finish_unrecorded, _renamed))
FINDINGS = FileKind('findings.json', 'schema')
COMPARE = FileKind('compare.json', 'schema')
BISECT = FileKind('bisect.json', 'schema')
RELEASES = FileKind('timm release index (cache)', 'schema')
COVERAGE_CACHE = FileKind('coverage rows (cache)', 'schema', (_rows,))
COVERAGE = FileKind('harness coverage --json', 'schema')
HOLDER = FileKind('lock holder', 'schema')
CHECKPOINT_META = FileKind('checkpoint meta.json', 'schema')
CHECKSUMS = FileKind('checkpoint sha256.json', 'schema', (_files,))
NOISE_FLOORS = FileKind('noise_floors.json', 'schema')
KINDS = (RECORD, RUN, FINDINGS, COMPARE, BISECT, RELEASES, COVERAGE_CACHE, COVERAGE, HOLDER, CHECKPOINT_META,
         CHECKSUMS, NOISE_FLOORS)


def version_of(kind: FileKind, data: Any) -> int:
    """The version ``data`` was written in: its version field, else 1 (written before the field)."""
    version = data.get(kind.key, 1) if isinstance(data, dict) else 1
    if type(version) is not int or version < 1:
        raise SchemaError(f'{kind.key}: expected a {kind.name} schema version, an int >= 1, got '
                          f'{json.dumps(version)[:80]}')
    return version


def upgrade(kind: FileKind, data: Any) -> Any:
    """``data`` as read from a file of ``kind``, read as if this harness had written it: every step from its
    version on applied, and its version field set to the current one. A newer file is returned as it is."""
    version = version_of(kind, data)
    if version > kind.version:
        return data
    for step in kind.steps[version - 1:]:
        data = step(data)
    return {**data, kind.key: kind.version}


def stamped(kind: FileKind, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the current version of ``kind`` as its first field, ready to write."""
    return {kind.key: kind.version, **body}


def without_version(kind: FileKind, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without its version field: for readers that build a dataclass from the rest."""
    return {k: v for k, v in data.items() if k != kind.key}
