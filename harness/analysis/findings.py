"""Findings: the failed cases of a run (or the regressed ones of a compare) grouped by root cause.

One timm defect (a loader that guesses a square window) fails dozens of cases across models and paths; a finding
is one such cause: the cases that share a :class:`Signature` (family, failed check, the kind of tensor that differs,
and the trigger: what the case changed of its source geometry). The build path is not part of it: the same defect
read through ``create`` and ``set_input_size`` is one finding, whose ``paths`` list both. Nor is where the tensor
sits: MaxViT's window, grid and CoAtNet attention tables (``attn_block.attn.rel_pos...``, ``attn.rel_pos...``) are
resized by one loader, so they are one finding, whose ``tensors`` list every place. A path that mishandles a
non-square source is one finding per family and path whatever check shows it (:data:`SOURCE_SHAPES`), listing its
``symptoms``. A finding's id is a short hash of its signature, so the same defect has the same id in every run and
a nightly can tell a new finding from one still open.

Nothing here imports torch or timm: a record names its family. Only a record of an older harness, which does
not, has its family looked up (:func:`family_name`), once per model configuration.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from harness.analysis.finding_trigger import trigger
from harness.repro import repro_command
from harness.results import path_rank, unsupported_why
from harness.spec.vocabulary import as_hw
from harness.store import schema
from harness.store.case_result import CHECKS

FINDINGS_JSON, FINDINGS_MD = 'findings.json', 'findings.md'
FINDING_STATUSES = ('failed', 'xpassed')   # a run's cases that are findings (error and resource are the harness's)
# the check that failed -> the record field naming what differs (a tensor, or the first error of a list)
DIFFERING_FIELD = {'reload': 'native_worst_tensor', 'fidelity': 'fidelity_worst_tensor', 'load': 'load_error',
                   'resize': 'resize_error', 'shapes': 'shape_errors', 'features': 'feature_errors',
                   'finite': 'nonfinite_outputs', 'noop': 'noop_changes', 'dtype': 'dtype_changes',
                   'trainable': 'trainable_changes'}
# A non-square source, read by a path's own code (create: the loader, as it loads; set_input_size; dynamic: the
# forward pass): code that takes it for square raises for a target of another token count (load, resize, shapes)
# and leaves the transposed target's tensors unresampled (fidelity). One cause, however it shows: one finding per
# family and path, listing its symptoms. source trigger -> the finding's trigger
SOURCE_SHAPES = {'rectangular source grid': 'rectangular source grid', 'transposed grid': 'rectangular source grid',
                 'rectangular source window': 'rectangular source window'}
SOURCE_CHECKS = ('load', 'resize', 'shapes', 'fidelity')
SOURCE_READ = 'source read'
ERROR_CHARS = 80   # of an error in a signature: enough to tell errors apart, short enough for a title
_INDEX = re.compile(r'(?<=\.)\d+(?=\.|$)')   # `layers.2.blocks.1.attn` -> `layers.*.blocks.*.attn`
_NUMBER = re.compile(r'\d+')                 # sizes in an error message: `(7, 7)` and `(8, 8)` read alike
_RAISED = re.compile(r'\b\w*(?:Error|Exception|Warning): .*')
_FILE = re.compile(r'/\S+')                  # a file named in an error: a cache path, a temporary folder
_GENERIC_PARAMETERS = ('weight', 'bias')     # a parameter name that says nothing without its module's


@dataclass(frozen=True)
class Signature:
    """What the cases of one finding share."""
    family: str
    check: str        # the first check that failed (in the order they run), or the status (xpassed, unsupported);
                      # SOURCE_READ for a path that mishandles a non-square source, whatever check showed it
    differs: str      # the kind of tensor that differs (:func:`tensor_kind`); or the error, its numbers erased
    trigger: str      # what the case changed of its source geometry, e.g. 'transposed grid'
    path: str = ''    # the build path, for SOURCE_READ alone: each path has its own code reading the source

    def id(self) -> str:
        fields = [self.family, self.check, self.differs, self.trigger] + [self.path] * bool(self.path)
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:10]


@dataclass
class Finding:
    id: str
    title: str
    signature: Signature
    representative: str             # the case id of the smallest case
    repro: str                      # the harness repro command of the representative
    architectures: list[str]        # timm model names
    paths: list[str]
    case_ids: list[str]
    tensors: list[str] = field(default_factory=list)   # where the differing tensors sit, indices erased
    symptoms: dict[str, int] = field(default_factory=dict)   # each check, trigger and difference seen: its cases
    new_symptoms: list[str] = field(default_factory=list)    # of an open finding, those the previous one lacked
    first_seen: str | None = None   # the release a compare's new side ran, when every case of it regressed there
    change: str | None = None       # against previous findings (harness.analysis.findings_previous): a CHANGE_WORDS key


CHANGE_WORDS = {'new': 'new finding', 'symptom': 'new symptom', 'open': 'still open'}


@dataclass(frozen=True)
class Gone:
    """A finding of the previous findings.json that this run no longer has."""
    id: str
    title: str


@dataclass(frozen=True)
class Failed:
    """A case to group: its record, and whether a compare says it regressed."""
    record: dict[str, Any]
    regressed: bool = False


# --- a case's signature -----------------------------------------------------------------------------------------
def first_failed_check(record: dict[str, Any]) -> str:
    checks = [check for check in CHECKS if check in (record.get('failed_checks') or [])]
    return checks[0] if checks else str(record.get('status'))


def normalised(name: str) -> str:
    """A tensor name with its block and stage indices erased (``layers.*.blocks.*.attn.relative_position_index``);
    an error message with its numbers erased too, since they are the case's sizes."""
    name = ' '.join(str(name).split())
    if ' ' not in name:
        return _INDEX.sub('*', name)
    raised = _RAISED.search(name)   # what timm raised, without the harness's call that led to it
    return _NUMBER.sub('N', _FILE.sub('FILE', raised.group(0) if raised else name))[:ERROR_CHARS].rstrip()


def tensor_kind(name: str) -> str:
    """A tensor named by what it is, not where it sits: its own name (``relative_position_bias_table``), with the
    module owning it where that name is a parameter's generic one (``cpb_mlp.weight``). An error stays as it is."""
    if ' ' in name:
        return name
    parts = [part for part in name.split('.') if part != '*' and not part.isdigit()]
    return '.'.join(parts[-2:] if len(parts) > 1 and parts[-1] in _GENERIC_PARAMETERS else parts[-1:])


def differing_raw(record: dict[str, Any], check: str) -> str:
    """What differs, for the check that failed, as the record says: the worst tensor, the first error (or
    missing key), or the reason; '' when the record does not say."""
    if check == 'load' and not record.get('load_error'):
        keys = (record.get('missing_keys') or []) + (record.get('unexpected_keys') or [])
        return str(keys[0]) if keys else ''
    value = record.get(DIFFERING_FIELD.get(check, ''))
    if isinstance(value, list):
        value = value[0] if value else None
    if value:
        return str(value)
    return unsupported_why(record.get('reason') or '') if check not in CHECKS else ''


def differing(record: dict[str, Any], check: str) -> str:
    """What differs, for a signature: the kind of tensor, or the error with its numbers erased."""
    raw = differing_raw(record, check)
    return tensor_kind(normalised(raw)) if raw else ''


def tensor_places(records: Iterable[dict[str, Any]]) -> list[str]:
    """Where the differing tensors of ``records`` sit, their indices erased; none for an error."""
    names = {normalised(differing_raw(record, first_failed_check(record))) for record in records}
    return sorted(name for name in names if name and ' ' not in name)


def symptom(record: dict[str, Any]) -> str:
    """How a case shows its finding: its check, trigger and difference, as a title says them."""
    check = first_failed_check(record)
    return _failure(check, differing(record, check), trigger(record))


def symptoms(records: list[dict[str, Any]]) -> dict[str, int]:
    """Each symptom of ``records`` with its number of cases, the most common first."""
    return dict(sorted(Counter(symptom(record) for record in records).items(), key=lambda item: (-item[1], item[0])))


def signature(record: dict[str, Any], family: str) -> Signature:
    check, kind = first_failed_check(record), trigger(record)
    if kind in SOURCE_SHAPES and check in SOURCE_CHECKS:
        return Signature(family, SOURCE_READ, '', SOURCE_SHAPES[kind], str(record.get('path') or ''))
    return Signature(family, check, differing(record, check), kind)


# --- grouping ---------------------------------------------------------------------------------------------------
def model_name(record: dict[str, Any]) -> str:
    return str(record.get('model_name') or record.get('model') or '')


def family_name(record: dict[str, Any]) -> str:
    """The family claiming a case's model, as its record says (``family``, recorded since issue 20). A record of an
    older harness is looked up: by its timm name, and by its overrides where they build another class
    (``use_naflex=True``); 'unclaimed' when none does. A meta-device build, once per model configuration."""
    if record.get('family'):
        return str(record['family'])
    overrides = record.get('model_overrides') or {}
    return _family_name(model_name(record), json.dumps(overrides, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _family_name(name: str, overrides_json: str) -> str:
    from harness.families import family_of
    from harness.spec.matrix import ModelSpec
    try:
        family = family_of(ModelSpec.of(name, json.loads(overrides_json)))
    except Exception:   # noqa: BLE001 - a name this timm does not know still groups, under 'unclaimed'
        family = None
    return family.name if family else 'unclaimed'


def _size_key(record: dict[str, Any]) -> tuple:
    h, w = as_hw(record.get('img_size')) or (0, 0)
    return h * w, str(record.get('case_id'))


def group(cases: Iterable[Failed], run_dir: Path | str, family: Callable[[dict[str, Any]], str] = family_name,
          new_release: str | None = None) -> list[Finding]:
    """The findings among ``cases``, the largest first (ties by id): the same list whatever the cases' order."""
    by_signature: dict[Signature, list[Failed]] = {}
    for case in cases:
        by_signature.setdefault(signature(case.record, family(case.record)), []).append(case)
    findings = [_finding(sig, members, run_dir, new_release) for sig, members in by_signature.items()]
    return sorted(findings, key=lambda f: (-len(f.case_ids), f.id))


def _finding(sig: Signature, members: list[Failed], run_dir: Path | str, new_release: str | None) -> Finding:
    records = sorted((m.record for m in members), key=_size_key)
    first = records[0]
    return Finding(
        id=sig.id(), title=title(sig), signature=sig, representative=first['case_id'],
        repro=repro_command(run_dir, first['case_id']),
        architectures=sorted({model_name(r) for r in records}),
        paths=sorted({str(r.get('path')) for r in records}, key=path_rank),
        case_ids=sorted(r['case_id'] for r in records), tensors=tensor_places(records), symptoms=symptoms(records),
        first_seen=new_release if new_release and all(m.regressed for m in members) else None)


def title(sig: Signature) -> str:
    """e.g. ``swin: fidelity fails on a window change at relative_position_index``, ``vit: resize fails on a
    rectangular grid: RuntimeError: ...``, or for a non-square source ``swin: create fails from a rectangular
    source window`` (its symptoms listed apart)."""
    if sig.check == SOURCE_READ:
        return f'{sig.family}: {sig.path} fails from a {sig.trigger}'
    return f'{sig.family}: {_failure(sig.check, sig.differs, sig.trigger)}'


def _failure(check: str, differs: str, trigger_kind: str) -> str:
    """``fidelity fails on a transposed grid at pos_embed``: a check, what differs and the trigger, in words."""
    on = f' on a {trigger_kind}' if trigger_kind else ''
    at = (f': {differs}' if ' ' in differs else f' at {differs}') if differs else ''
    verb = check if check in ('xpassed', 'unsupported') else f'{check} fails'
    return f'{verb}{on}{at}'


# --- output -----------------------------------------------------------------------------------------------------
@dataclass
class FindingsReport:
    source: str                       # the run or compare folder
    kind: str                         # 'run' or 'compare'
    cases: int                        # failed (or regressed) cases grouped
    findings: list[Finding] = field(default_factory=list)
    previous: str | None = None       # the previous findings.json the findings' ``change`` is against
    gone: list[Gone] = field(default_factory=list)   # its findings this one no longer has

    def summary(self) -> str:
        line = f'{counted(len(self.findings), "finding")} from {counted(self.cases, "failed case")}'
        if self.previous is None:
            return line
        changes = {word: sum(f.change == change for f in self.findings) for change, word in CHANGE_WORDS.items()}
        return line + ': ' + ', '.join(f'{n} {word}' for word, n in changes.items()
                                       if n or word != CHANGE_WORDS['symptom']) + f', {len(self.gone)} gone'

    def to_json(self) -> str:
        body = schema.stamped(schema.FINDINGS, {
            'source': self.source, 'kind': self.kind, 'cases': self.cases,
            'findings': [dataclasses.asdict(f) for f in self.findings], 'previous': self.previous,
            'gone': [dataclasses.asdict(g) for g in self.gone]})
        return json.dumps(body, indent=2) + '\n'

    def to_markdown(self) -> str:
        return '\n'.join([f'# Findings: {self.source}', '', *self.markdown_section('##')]) + '\n'

    def markdown_section(self, heading: str) -> list[str]:
        """The summary line, then each finding under a ``heading`` (``##``) of its own."""
        lines = [f'**{self.summary()}**', '']
        for finding in self.findings:
            lines += markdown_finding(finding, heading)
        if self.gone:
            lines += [f'{heading} Gone since {self.previous}', '',
                      *(f'- `{gone.id}` {gone.title}' for gone in self.gone), '']
        return lines[:-1]   # without the last blank line: the caller separates sections


def counted(n: int, noun: str) -> str:
    return f'{n} {noun}{"s" * (n != 1)}'


def markdown_finding(finding: Finding, heading: str = '##') -> list[str]:
    """One finding as markdown: its title, then what it affects and how to reproduce it, in 100 columns."""
    seen = f'; first seen in timm {finding.first_seen}' if finding.first_seen else ''
    seen += f', {CHANGE_WORDS[finding.change]}' if finding.change else ''
    affects = (f'- {counted(len(finding.case_ids), "case")} on {", ".join(finding.paths)}, architectures: '
               + ', '.join(finding.architectures))
    places = [f'- tensors: {", ".join(f"`{name}`" for name in finding.tensors)}'] if finding.tensors else []
    if finding.signature.check == SOURCE_READ:
        places += ['- symptoms:', *(f'  - {text} ({counted(n, "case")})' + ' **new**' * (text in finding.new_symptoms)
                                    for text, n in finding.symptoms.items())]
    return [f'{heading} {finding.title}', '', f'- id `{finding.id}`{seen}',
            textwrap.fill(affects, 100, subsequent_indent='  ', break_long_words=False, break_on_hyphens=False),
            *places,
            f'- representative: `{finding.representative}`, reproduced by:', '', '```bash', finding.repro, '```', '']


# --- input ------------------------------------------------------------------------------------------------------
class FindingsInputError(ValueError):
    """A folder that is neither a run nor a compare; ``str()`` names the file and what was expected."""


@dataclass(frozen=True)
class Source:
    """What to group: the cases, the run folder their repro commands name, and a compare's new release."""
    kind: str
    cases: list[Failed]
    run_dir: Path
    new_release: str | None = None


def read_source(path: Path, xfailed: bool = False) -> Source:
    """A run folder (or its results.jsonl): its failed and xpassed cases. A compare folder (compare.json): the
    new side's failed and xpassed cases and the cases it regressed (passed -> unsupported too). ``xfailed``:
    the xfailed cases too (the defects a matrix already marks as known)."""
    statuses = FINDING_STATUSES + ('xfailed',) * xfailed
    from harness.analysis.compare import CompareFiles
    from harness.results import RESULTS_FILE, read_results
    compare_json = CompareFiles.in_folder(path if path.is_dir() else path.parent).json
    if compare_json.is_file() and (path.is_dir() or path == compare_json):
        return _compare_source(compare_json, statuses)
    results = path / RESULTS_FILE if path.is_dir() else path
    if not results.is_file():
        raise FindingsInputError(f'{path}: neither {RESULTS_FILE} nor compare.json there; expected a run folder '
                                 f'(harness run) or a compare folder (harness compare)')
    cases = [Failed(r) for r in read_results(results) if r.get('status') in statuses]
    return Source('run', cases, results.parent)


def _compare_source(compare_json: Path, statuses: tuple[str, ...]) -> Source:
    from harness.results import RESULTS_FILE, read_results
    body = _json_object(compare_json)
    new = body.get('new')
    if not isinstance(new, dict) or not isinstance(new.get('label'), str) or not isinstance(body.get('cases'), list):
        raise FindingsInputError(f'{compare_json}: expected "new": {{"label": <run folder>}} and "cases": [...], as '
                                 f'harness compare writes')
    run_dir = _new_side_folder(compare_json, new['label'])
    records = {(r.get('matrix', ''), r['case_id']): r for r in read_results(run_dir / RESULTS_FILE)}
    regressed = {(c.get('matrix', ''), c.get('case_id')) for c in body['cases']
                 if isinstance(c, dict) and c.get('change') == 'regressed'}
    cases = compare_cases(records, regressed, statuses)
    release = (new.get('run') or {}).get('timm_version') if isinstance(new.get('run'), dict) else None
    return Source('compare', cases, run_dir, release or None)


def compare_cases(records: dict[tuple[str, str], dict[str, Any]], regressed: set[tuple[str, str]],
                  statuses: tuple[str, ...] = FINDING_STATUSES) -> list[Failed]:
    """The cases of a compare's new side to group: those it regressed and those of ``statuses``."""
    return [Failed(record, key in regressed) for key, record in records.items()
            if key in regressed or record.get('status') in statuses]


def _json_object(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise FindingsInputError(f'{path}: not readable JSON ({e}); expected the compare.json harness compare '
                                 f'writes') from None
    if not isinstance(body, dict):
        raise FindingsInputError(f'{path}: expected a JSON object, as harness compare writes')
    try:
        return schema.upgrade(schema.COMPARE, body)
    except schema.SchemaError as e:
        raise FindingsInputError(f'{path}: {e}') from None


def _new_side_folder(compare_json: Path, label: str) -> Path:
    """The new side's run folder: its label as given to harness compare, relative to where that ran: here, else
    the compare folder or a folder above it (``harness compare reports/a reports/b --out reports/ab`` run in
    another folder)."""
    from harness.results import RESULTS_FILE
    folder = compare_json.parent.resolve()
    for candidate in (Path(label), *(above / label for above in (folder, *folder.parents))):
        folder = candidate if candidate.is_dir() else candidate.parent
        if (folder / RESULTS_FILE).is_file():
            return folder
    raise FindingsInputError(f'{compare_json}: new.label: {label!r} holds no {RESULTS_FILE} (from here, from '
                             f'{compare_json.parent} or a folder above it); expected the new run\'s folder')


def findings_of(path: Path, family: Callable[[dict[str, Any]], str] | None = None,
                xfailed: bool = False) -> FindingsReport:
    """The findings of a run or compare folder (:func:`read_source`); ``family`` names a record's family
    (default: :func:`family_name`)."""
    return report_of(str(path), read_source(path, xfailed), family or family_name)


def report_of(label: str, source: Source, family: Callable[[dict[str, Any]], str] = family_name) -> FindingsReport:
    """The findings of ``source``'s cases, under ``label`` (the run or compare they came from)."""
    return FindingsReport(label, source.kind, len(source.cases),
                          group(source.cases, source.run_dir, family, source.new_release))


def write_findings(report: FindingsReport, out: Path) -> tuple[Path, Path]:
    from harness.store.atomic_file import write_atomically
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / FINDINGS_JSON, report.to_json())
    write_atomically(out / FINDINGS_MD, report.to_markdown())
    return out / FINDINGS_JSON, out / FINDINGS_MD
