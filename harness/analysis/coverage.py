"""``harness coverage``: every architecture of a timm release, the family that claims it, and what the harness
can check for it.

Categories (:data:`CATEGORIES`): ``oracle`` (a family resizes it with the harness's own oracle),
``nothing_to_resample`` (it accepts a new size as it is, proven by a meta-device forward pass at another
size: shapes, drift and timing only), ``fixed_size`` (only its own size: its cases are ``unsupported``) and
``unknown`` (no family claims it; ``reason`` says why). Everything is decided on the meta device, without
weights, and the full table is cached per release and version of the families' code (:func:`families_digest`):
neither changes between runs, and a new family or probe must not be hidden behind an old table.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from harness.store import schema

_logger = logging.getLogger(__name__)

CATEGORIES = ('oracle', 'nothing_to_resample', 'fixed_size', 'unknown')
PROGRESS_EVERY = 100


@dataclass(frozen=True)
class Architecture:
    architecture: str
    module: str              # the timm module that registers it, e.g. ``resnet``
    family: str | None
    category: str
    paths: tuple[str, ...]   # the build paths its cases take
    checks: tuple[str, ...]  # the checks its cases run
    reason: str              # why it is unknown or fixed-size ('' otherwise)
    zoo: str = ''            # how the zoo sweep (--zoo) runs it: miniature, real (its real configuration) or no
    zoo_reason: str = ''     # why it is not a miniature, or why the sweep leaves it out


def classify(name: str) -> Architecture:
    """One architecture's row (its meta build and probes are cached only briefly: a release has 1,000+)."""
    import timm.models

    from harness.families import family_of, unclaimed_reason
    from harness.spec.zoo import zoo_choice
    module = timm.models.model_entrypoint(name).__module__.rpartition('.')[2]
    family = family_of(name)
    if family is None:
        return Architecture(name, module, None, 'unknown', (), (), unclaimed_reason(name), 'no', 'no family')
    choice = zoo_choice(name)
    zoo = 'no' if choice.overrides is None else 'miniature' if choice.overrides else 'real'
    return Architecture(name, module, family.name, family.category, family.paths, family.checks,
                        family.unsupported(name) or '', zoo, choice.left_out or choice.note)


def families_digest() -> str:
    """A digest of the code that decides families and how the zoo sweep runs them (harness/families/,
    harness/spec/zoo.py), 12 hex digits."""
    import harness.families
    import harness.spec.zoo
    digest = hashlib.sha256()
    for source in [*sorted(Path(harness.families.__file__).parent.glob('*.py')), Path(harness.spec.zoo.__file__)]:
        digest.update(source.name.encode() + b'\0' + source.read_bytes())
    return digest.hexdigest()[:12]


def release_coverage(cache_dir: Path, say: Callable[[str], None]) -> list[Architecture]:
    """Every architecture of the installed release, from the cache when this release was covered before."""
    import timm
    cached = cache_dir / 'coverage' / f'timm-{timm.__version__}-families-{families_digest()}.json'
    if cached.is_file():
        body = schema.upgrade(schema.COVERAGE_CACHE, json.loads(cached.read_text()))
        return [Architecture(**{**row, 'paths': tuple(row['paths']), 'checks': tuple(row['checks'])})
                for row in body['rows']]
    rows = covered(timm.list_models(), say)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = cached.with_suffix('.partial')
    body = schema.stamped(schema.COVERAGE_CACHE, {'rows': [dataclasses.asdict(row) for row in rows]})
    staging.write_text(json.dumps(body))
    staging.replace(cached)
    return rows


def covered(names: list[str], say: Callable[[str], None]) -> list[Architecture]:
    rows = []
    for i, name in enumerate(names, 1):
        rows.append(classify(name))
        if i % PROGRESS_EVERY == 0 or i == len(names):
            say(f'coverage: {i}/{len(names)} architectures')
    return rows


def selected(names: list[str], patterns: list[str]) -> list[str]:
    return [name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)]


def to_frame(rows: list[Architecture]) -> pd.DataFrame:
    frame = pd.DataFrame([dataclasses.asdict(row) for row in rows], columns=list(Architecture.__dataclass_fields__))
    for column in ('paths', 'checks'):
        frame[column] = frame[column].map(' '.join)
    return frame


def summary(rows: list[Architecture]) -> pd.DataFrame:
    """Architectures per category and family, with each category's share."""
    frame = to_frame(rows).fillna({'family': '-'})
    counts = frame.groupby(['category', 'family']).size().rename('architectures').reset_index()
    counts['category'] = pd.Categorical(counts['category'], CATEGORIES, ordered=True)
    counts = counts.sort_values(['category', 'architectures'], ascending=[True, False])
    counts['share'] = (counts['architectures'] / len(frame)).map('{:.1%}'.format)
    return counts


def summary_line(rows: list[Architecture]) -> str:
    """e.g. ``1371 architectures: 250 oracle, 700 nothing_to_resample, ...; 95.2% in a family; --zoo runs 1250
    (96.1% of those), 380 in miniature``."""
    frame = to_frame(rows)
    counts = frame['category'].value_counts()
    in_family = frame['family'].notna()
    zoo = frame.loc[in_family, 'zoo'].value_counts()
    runs = zoo.get('miniature', 0) + zoo.get('real', 0)
    return (f'{len(frame)} architectures: ' + ', '.join(f'{counts.get(c, 0)} {c}' for c in CATEGORIES)
            + f'; {in_family.mean() if len(frame) else 0.0:.1%} in a family; --zoo runs {runs} '
            f'({runs / max(1, in_family.sum()):.1%} of those), {zoo.get("miniature", 0)} in miniature')


def render(rows: list[Architecture], fmt: str) -> str:
    frame = to_frame(rows)
    if fmt == 'csv':
        return frame.to_csv(index=False)
    if fmt == 'json':
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient='records')   # NaN -> null
        body = schema.stamped(schema.COVERAGE, {'summary': summary_line(rows), 'architectures': records})
        return json.dumps(body, indent=1) + '\n'
    return '\n'.join([f'**{summary_line(rows)}**', '', summary(rows).to_markdown(index=False), '',
                      frame.fillna('').to_markdown(index=False), ''])
