"""``harness merge``: the shards of one run (``harness run --shard K/N`` in separate CI jobs) as one run folder.

The shards must be the same run: their run.json agree on everything :func:`harness.run_record.differences`
checks (timm, torch, device, dtype, batch size, matrix content), and no case appears in two shards.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.atomic_file import write_atomically
from harness.results import RESULTS_FILE, read_results, set_aside
from harness.run_folder import remove_reports
from harness.run_record import RunRecord, differences, read_run_record, write_run_record


class MergeError(ValueError):
    """Shards that are not one run; ``str()`` names the folder and what differs."""


def merge_runs(out: Path, shards: list[Path], argv: list[str]) -> int:
    """Write ``out``'s run.json and results.jsonl from ``shards``; the number of cases merged."""
    records = [_run_record(shard) for shard in shards]
    for shard, record in zip(shards[1:], records[1:]):
        changed = differences(records[0], record)
        if changed:
            raise MergeError(f'{shard}: not a shard of the run in {shards[0]}: {"; ".join(changed)}')
    merged, source = [], {}
    for shard in shards:
        results = shard / RESULTS_FILE
        for result in read_results(results) if results.exists() else []:   # a shard may hold no case
            key = (result.get('matrix'), result['case_id'])
            if key in source:
                raise MergeError(f'{shard}: case {key[1]} is also in {source[key]}; expected disjoint shards')
            source[key] = shard
            merged.append(result)
    out.mkdir(parents=True, exist_ok=True)
    previous = read_run_record(out)
    remove_reports(out)
    set_aside(out, previous.started() if previous else None)
    write_run_record(out, _merged_record(records, argv))
    write_atomically(out / RESULTS_FILE, ''.join(json.dumps(result) + '\n' for result in merged))
    return len(merged)


def _run_record(shard: Path) -> RunRecord:
    if not shard.is_dir():
        raise MergeError(f'{shard}: no such folder; expected a run folder written by harness run --shard')
    record = read_run_record(shard)
    if record is None:
        raise MergeError(f'{shard}: no run.json; expected a run folder written by harness run --shard')
    return record


def _merged_record(records: list[RunRecord], argv: list[str]) -> RunRecord:
    ended = [r.finished_at for r in records]
    return dataclasses.replace(records[0], shard='', argv=argv, started_at=min(r.started_at for r in records),
                               finished_at='' if '' in ended else max(ended))
