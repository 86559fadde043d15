"""``harness merge``: the shards of one run (``harness run --shard K/N`` in separate CI jobs) as one run folder.

The shards must be the whole of one run: their run.json agree on everything :func:`harness.store.run_record.differences`
checks (timm, torch, device, dtype, batch size, matrix content), each is shard K of the same N (from its
run.json), every K from 1 to N is there once, each finished, and no case appears in two shards.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from harness.results import RESULTS_FILE, read_run_results, set_aside
from harness.spec.model import parse_shard
from harness.store.atomic_file import write_atomically
from harness.store.run_folder import remove_reports
from harness.store.run_record import RUN_FILE, RunRecord, check_finished, differences, read_run_record, write_run_record


class MergeError(ValueError):
    """Shards that are not one run; ``str()`` names the folder and what differs."""


def merge_runs(out: Path, shards: list[Path], argv: list[str]) -> int:
    """Write ``out``'s run.json and results.jsonl from ``shards``; the number of cases merged."""
    records = [_run_record(shard) for shard in shards]
    for shard, record in zip(shards[1:], records[1:]):
        changed = differences(records[0], record)
        if changed:
            raise MergeError(f'{shard}: not a shard of the run in {shards[0]}: {"; ".join(changed)}')
    _check_all_shards(shards, records)
    merged, source = [], {}
    for shard in shards:
        results = shard / RESULTS_FILE
        for result in read_run_results(results) if results.exists() else []:   # a shard may hold no case
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
    if not record.shard:
        raise MergeError(f'{shard}: run.json has no shard; expected a run folder written by harness run --shard K/N')
    try:
        parse_shard(record.shard)
    except ValueError as e:
        raise MergeError(f'{shard / RUN_FILE}: shard: {e}') from None
    check_finished(shard, record)
    return record


def _check_all_shards(shards: list[Path], records: list[RunRecord]) -> None:
    """Each shard K of the same N, once, and none of the N missing: N comes from the shards' run.json."""
    seen: dict[int, Path] = {}
    count = parse_shard(records[0].shard)[1]
    for shard, record in zip(shards, records):
        index, of = parse_shard(record.shard)
        if of != count:
            raise MergeError(f'{shard}: shard {record.shard}, but {shards[0]} is shard {records[0].shard}; expected '
                             f'shards of one split into {count}')
        if index in seen:
            raise MergeError(f'{shard}: shard {record.shard} is also in {seen[index]}; expected each shard once')
        seen[index] = shard
    missing = [f'{index}/{count}' for index in range(1, count + 1) if index not in seen]
    if missing:
        raise MergeError(f'missing shard{"s" if len(missing) > 1 else ""} {", ".join(missing)}: got '
                         f'{", ".join(f"{index}/{count} ({seen[index]})" for index in sorted(seen))}; expected all '
                         f'{count} shards of the run')


def _merged_record(records: list[RunRecord], argv: list[str]) -> RunRecord:
    ended = [r.finished_at for r in records]
    return dataclasses.replace(records[0], shard='', argv=argv, started_at=min(r.started_at for r in records),
                               finished_at='' if '' in ended else max(ended))
