"""How report.md spells a figure: the cell formatters, wrapping to a terminal's width, and GitHub tables.

Shared by the report's sections (:mod:`harness.analysis.report`); nothing here knows what a figure means.
"""
from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any, Callable, Iterable

import pandas as pd
from tabulate import tabulate

WIDTH = 100   # report.md's prose, lists and reasons fit a terminal this wide
NULL = '—'

Formatter = Callable[[Any], str]


def is_null(value: Any) -> bool:
    return value is None or (not isinstance(value, (list, tuple)) and bool(pd.isna(value)))


def as_text(value: Any) -> str:
    return NULL if is_null(value) or value == '' else str(value)


def as_number(spec: str) -> Formatter:
    return lambda v: NULL if is_null(v) else format(v, spec)


def as_sci(value: Any) -> str:
    return NULL if is_null(value) else '0' if value == 0 else f'{value:.1e}'


def as_yes_no(value: Any) -> str:
    return NULL if is_null(value) else 'yes' if value else 'no'


def as_percent(value: Any) -> str:
    return NULL if is_null(value) else f'{value:.1%}'


def as_giga(value: Any) -> str:
    return NULL if is_null(value) else f'{value / 1e9:.3g}'


def as_size(value: Any) -> str:
    return 'x'.join(str(v) for v in value) if isinstance(value, list) and value else NULL


def as_reason(value: Any) -> str:
    return ' '.join(as_text(value).split())


def wrapped(text: str, indent: str = '', first: str = '') -> str:
    """``text`` wrapped to WIDTH columns; words longer than a line (paths, case ids) are kept whole."""
    return textwrap.fill(text, WIDTH, initial_indent=first or indent, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


def github_table(cells: pd.DataFrame) -> str:
    escaped = cells.apply(lambda col: col.map(lambda v: str(v).replace('|', '\\|')))
    # disable_numparse: the cells are already formatted, tabulate must not turn '1.0000' back into '1'
    return tabulate(escaped, headers='keys', tablefmt='github', showindex=False, disable_numparse=True)


def distinct(values: Iterable[Any]) -> str:
    """'1.0.9', or every value with its case count when cases disagree; cases without a value are ignored."""
    counts = Counter(as_text(v) for v in values if not is_null(v))
    if len(counts) <= 1:
        return next(iter(counts), NULL)
    return ', '.join(f'{v} ({n_cases(n)})' for v, n in counts.items())


def n_cases(n: int) -> str:
    return f'{n} case' if n == 1 else f'{n} cases'
