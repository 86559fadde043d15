"""Compare two runs (two timm releases, or one release on two days): what changed in correctness and in speed.

Cases are joined by matrix and case id. Each gets two verdicts:

- ``change``, from the statuses and figures: ``regressed`` (ok -> bad, or passed -> unsupported), ``fixed``
  (bad -> ok), ``outputs_changed`` (the same status, but the outputs' fingerprint or a check's figure moved by
  more than ``outputs_atol``: a numeric change too small for any check's tolerance still shows; or what the
  dtype, trainable or features check found differs),
  ``unchanged``, ``new``, ``removed``, or ``not_comparable`` (``error`` or ``resource`` on either side);
- ``timing_change``, from the raw timed passes, in the manner of asv: ``slower``/``faster`` only when a
  two-sided Mann-Whitney U test is significant at ``alpha`` AND the ratio of medians is beyond ``factor``;
  ``noisy`` when beyond the factor but not significant, or when the timing rounds disagree; ``same``;
  ``not_comparable`` when the two were measured differently (device name, dtype, precision, compile,
  channels-last, batch size, torch, or a run without run.json).

  Rounds are TorchBench's stability screen made local: ``harness ab`` times each case in rounds alternating
  between the releases, so each round's two medians were measured minutes apart on the same machine. A change
  is flagged only when every round points the same way and the median of the per-round ratios is beyond the
  factor too: a burst of machine noise in one round (which the rank test over all samples can mistake for a
  change) does not move that median.

Nothing here reads or writes files except :func:`load_side`; the command line writes the tables
(:mod:`harness.analysis.compare_report`).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.case.check_registry import figure_fields, finding_fields
from harness.results import RESULTS_FILE, read_run_results
from harness.store.run_record import RUN_FILE, RunRecord, check_finished, read_run_record
from harness.store.run_settings import MEASUREMENT

OK = ('passed', 'xfailed', 'unsupported')
BAD = ('failed', 'xpassed')
CHANGES = ('regressed', 'fixed', 'outputs_changed', 'unchanged', 'new', 'removed', 'not_comparable')
TIMING_CHANGES = ('slower', 'faster', 'noisy', 'same', 'not_comparable')
FAILING_CHANGES = ('regressed',)        # what makes `harness compare` exit 1 (with `slower` and a new error)
FAILING_TIMING_CHANGES = ('slower',)
# what two timings must share to be compared: the run's timing settings, and the batch that fitted in memory
TIMING_SETTINGS = (*(setting.name for setting in MEASUREMENT if setting.timing), 'batch_size_used')
# sequential runs whose timed cases moved together by more than this (median ratio) get a warning
SHARED_SHIFT = 1.05
SHARED_SHIFT_MIN_CASES = 5


class CompareError(ValueError):
    """A side that cannot be compared (no results there); ``str()`` names the path."""


@dataclass(frozen=True)
class CompareFiles:
    """The files a compare writes into its folder (harness.analysis.compare_report), found there by findings and a run
    that takes the folder over."""
    markdown: Path
    json: Path

    @classmethod
    def in_folder(cls, out_dir: Path) -> CompareFiles:
        return cls(out_dir / 'compare.md', out_dir / 'compare.json')


@dataclass(frozen=True)
class CompareSpec:
    factor: float = 1.1          # a median ratio beyond this (or below its inverse) may be a timing change
    alpha: float = 0.002         # ... when the rank test's p-value is below this
    outputs_atol: float = 1e-5   # a fingerprint or check figure moving more than this is an outputs change


@dataclass(frozen=True)
class Side:
    """One run to compare: where it came from, its run.json (None before run.json existed) and its records."""
    label: str
    run: RunRecord | None
    records: dict[tuple[str, str], dict[str, Any]]   # (matrix, case id) -> record


@dataclass(frozen=True)
class CaseComparison:
    matrix: str
    case_id: str
    base_status: str | None
    new_status: str | None
    change: str
    timing_change: str
    ratio: float | None        # new median / base median
    p_value: float | None      # two-sided Mann-Whitney U on the timed passes
    detail: str                # what moved, or why the case is not comparable


def load_side(path: Path) -> Side:
    """A run folder (results.jsonl and, from issue 6 on, run.json) or a results.jsonl file, of a finished run:
    results cut short, empty or garbage, a run.json without an end time, are refused (a CI gate must not pass on
    a broken run). A shard's run.json alone stands for a shard that held no case (harness ab --shard)."""
    results = path / RESULTS_FILE if path.is_dir() else path
    run = read_run_record(results.parent) if (results.parent / RUN_FILE).exists() else None
    if not results.is_file() and not (run and run.shard):
        raise CompareError(f'{path}: no {RESULTS_FILE} there; expected a run folder or a results file written by '
                           f'harness run')
    if run is not None:
        check_finished(results.parent, run)
    records = {(r.get('matrix', ''), r['case_id']): r for r in read_run_results(results)} if results.is_file() else {}
    return Side(str(path), run, records)


def compare(base: Side, new: Side, spec: CompareSpec) -> list[CaseComparison]:
    """Every case of either side, in base order then the new side's new cases."""
    keys = list(base.records) + [key for key in new.records if key not in base.records]
    timing_problem = timings_not_comparable(base, new)
    return [compare_case(key, base.records.get(key), new.records.get(key), timing_problem, spec) for key in keys]


def timings_not_comparable(base: Side, new: Side) -> str | None:
    """Why no timing of these two runs can be compared, or None. Runs from before run.json existed do not say
    enough about how they were measured; TF32 and cuDNN settings change what a pass costs."""
    if base.run is None or new.run is None:
        return 'a run without run.json (timed before the harness recorded how)'
    if base.run.math_flags and new.run.math_flags and base.run.math_flags != new.run.math_flags:
        return f'math settings differ: {base.run.math_flags} vs {new.run.math_flags}'
    return None


def compare_case(key: tuple[str, str], base: dict | None, new: dict | None, timing_problem: str | None,
                 spec: CompareSpec) -> CaseComparison:
    """One case's comparison; ``timing_problem`` says why the two runs' timings cannot be compared, if so."""
    change, detail = status_change(base, new, spec)
    if base is None or new is None:
        timing, ratio, p_value, why = 'not_comparable', None, None, ''
    elif timing_problem and base.get('time_samples_ms') and new.get('time_samples_ms'):
        timing, ratio, p_value, why = 'not_comparable', None, None, timing_problem
    else:
        timing, ratio, p_value, why = timing_change(base, new, spec)
    return CaseComparison(key[0], key[1], base and base.get('status'), new and new.get('status'), change, timing,
                          ratio, p_value, '; '.join(part for part in (detail, why) if part))


def status_change(base: dict | None, new: dict | None, spec: CompareSpec) -> tuple[str, str]:
    """(change, what moved or why not comparable)."""
    if base is None:
        return 'new', ''
    if new is None:
        return 'removed', ''
    was, now = base.get('status'), new.get('status')
    if was in ('error', 'resource') or now in ('error', 'resource'):
        return 'not_comparable', f'{was} -> {now}'
    if (was in OK and now in BAD) or (was == 'passed' and now == 'unsupported'):
        return 'regressed', f'{was} -> {now}: {new.get("reason", "")}'.rstrip(': ')
    if was in BAD and now in OK:
        return 'fixed', f'{was} -> {now}'
    moved = moved_outputs(base, new, spec.outputs_atol)
    return ('outputs_changed', '; '.join(moved)) if moved else ('unchanged', '')


def moved_outputs(base: dict, new: dict, atol: float) -> list[str]:
    """The fingerprint fields and check figures that moved by more than ``atol`` (a figure present on one side
    only counts as moved). Fingerprints are compared only between the same device type."""
    moved = [f'{name} {_shown(base.get(name))} -> {_shown(new.get(name))}' for name in figure_fields()
             if _moved(base.get(name), new.get(name), atol)]
    moved += [f'{name} {_shown(base.get(name) or [])} -> {_shown(new.get(name) or [])}' for name in finding_fields()
              if (base.get(name) or []) != (new.get(name) or [])]
    old_print, new_print = base.get('output_fingerprint'), new.get('output_fingerprint')
    if old_print and new_print and base.get('device') == new.get('device') and old_print != new_print:
        if old_print.get('digest') != new_print.get('digest'):
            moved += [f'outputs {name} {_shown(old_print.get(name))} -> {_shown(new_print.get(name))}'
                      for name in sorted(set(old_print) | set(new_print)) if name != 'digest'
                      and _moved(old_print.get(name), new_print.get(name), atol)]
    return moved


def _moved(old: Any, new: Any, atol: float) -> bool:
    if isinstance(old, list) or isinstance(new, list):
        if not (isinstance(old, list) and isinstance(new, list)) or len(old) != len(new):
            return True
        return any(_moved(a, b, atol) for a, b in zip(old, new))
    if old is None or new is None:
        return (old is None) != (new is None)
    if math.isnan(old) or math.isnan(new):
        return math.isnan(old) != math.isnan(new)
    return abs(old - new) > atol


def timing_change(base: dict, new: dict, spec: CompareSpec) -> tuple[str, float | None, float | None, str]:
    """(timing change, ratio of medians, p-value, why not comparable)."""
    old_samples, new_samples = base.get('time_samples_ms'), new.get('time_samples_ms')
    if not old_samples or not new_samples:
        return 'not_comparable', None, None, ''
    differ = [f'{name} {base.get(name)} vs {new.get(name)}' for name in TIMING_SETTINGS
              if base.get(name) != new.get(name)]
    if differ:
        return 'not_comparable', None, None, 'timed differently: ' + ', '.join(differ)
    from scipy.stats import mannwhitneyu  # here: the command line imports this module before any slow import
    ratio = statistics.median(new_samples) / statistics.median(old_samples)
    p_value = float(mannwhitneyu(old_samples, new_samples, alternative='two-sided').pvalue)
    if not _beyond(ratio, spec.factor):
        return 'same', ratio, p_value, ''
    if p_value >= spec.alpha:
        return 'noisy', ratio, p_value, ''
    rounds = round_ratios((old_samples, base.get('time_sample_rounds')), (new_samples, new.get('time_sample_rounds')))
    if len(rounds) > 1 and not _rounds_agree(rounds, ratio, spec.factor):
        return 'noisy', ratio, p_value, 'timing rounds disagree: ratios ' + ', '.join(f'{r:.2f}' for r in rounds)
    return ('slower' if ratio > 1 else 'faster'), ratio, p_value, ''


Samples = tuple[list[float], list[int] | None]   # timed passes and the round of each (None: not recorded)


def round_ratios(base: Samples, new: Samples) -> list[float]:
    """New median over base median per timing round both sides were timed in (``harness ab``'s interleaved
    rounds); empty when the samples carry no rounds."""
    per_side = []
    for samples_ms, rounds in (base, new):
        by_round: dict[int, list[float]] = {}
        for round_number, ms in zip(rounds or (), samples_ms):
            by_round.setdefault(round_number, []).append(ms)
        per_side.append(by_round)
    old, now = per_side
    return [statistics.median(now[r]) / statistics.median(old[r]) for r in sorted(set(old) & set(now))]


def _rounds_agree(rounds: list[float], ratio: float, factor: float) -> bool:
    same_way = all(r > 1 for r in rounds) if ratio > 1 else all(r < 1 for r in rounds)
    return same_way and _beyond(statistics.median(rounds), factor)


def _beyond(ratio: float, factor: float) -> bool:
    return ratio > factor or ratio < 1 / factor


def shared_shift(base: Side, new: Side, comparisons: list[CaseComparison]) -> str | None:
    """A warning when two runs timed one after the other (not in interleaved rounds) moved together: the median
    ratio over every timed case beyond :data:`SHARED_SHIFT`. Such runs cannot tell a release that changed every
    case from a machine whose speed drifted between them (10-40% between runs minutes apart on a shared 2-core
    VM); the verdicts stand, the warning says what they cannot rule out."""
    ratios = [c.ratio for c in comparisons if c.ratio is not None]
    if len(ratios) < SHARED_SHIFT_MIN_CASES or _interleaved(base) or _interleaved(new):
        return None
    shift = statistics.median(ratios)
    if not _beyond(shift, SHARED_SHIFT):
        return None
    return (f'the timed cases moved together (median ratio {shift:.2f} over {len(ratios)} cases): two runs timed '
            f'one after the other cannot tell a release that changed every case from a machine whose speed '
            f'drifted between them; harness ab times both releases in interleaved rounds and can')


def _interleaved(side: Side) -> bool:
    return any(len(set(record.get('time_sample_rounds') or ())) > 1 for record in side.records.values())


def exit_code(comparisons: list[CaseComparison]) -> int:
    """1 on a regression, a slowdown or a case that became an error; else 0."""
    failing = any(c.change in FAILING_CHANGES or c.timing_change in FAILING_TIMING_CHANGES
                  or (c.new_status == 'error' and c.base_status != 'error') for c in comparisons)
    return 1 if failing else 0


def _shown(value: Any) -> str:
    if isinstance(value, float):
        return f'{value:.6g}'
    return str(value)
