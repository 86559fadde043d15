"""Expand a matrix into cases: one model, checkpoint origin, target configuration and build path each."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from harness.checkpoints.origins import FILE_ORIGIN
from harness.families import Size, Target, family_of
from harness.families.base import Family
from harness.spec.model import Expectation, Matrix, ModelSpec, OriginSpec, Selection, Window
from harness.states import DEFAULT_STATE


@dataclass(frozen=True)
class Case:
    model: ModelSpec
    origin: OriginSpec
    img_size: Size
    patch_size: int | None
    window_size: Window | None
    path: str
    state: str = DEFAULT_STATE   # what the model is before it is resized (harness.states)

    @property
    def family(self) -> Family:
        return family_of(self.model)

    @property
    def target(self) -> Target:
        return Target(self.img_size, self.patch_size, self.window_size)

    @property
    def origin_label(self) -> str:
        if self.origin.name == FILE_ORIGIN:
            return f'file={Path(self.origin.file).stem}'
        return self.origin.name

    @property
    def case_id(self) -> str:
        """Readable and unique within a matrix, e.g.
        ``vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create``; a state other than the default
        comes before the path (``...-224x224-bf16-set_input_size``)."""
        parts = [self.model.label, self.origin_label, f'{self.img_size[0]}x{self.img_size[1]}']
        if self.patch_size is not None:
            parts.append(f'patch{self.patch_size}')
        if self.window_size is not None:
            parts.append(f'window{size_label(self.window_size)}')
        if self.state != DEFAULT_STATE:
            parts.append(self.state)
        parts.append(self.path)
        return '-'.join(parts)

    @property
    def group(self) -> str:
        """Cases sharing a checkpoint; xdist keeps a group on one worker so it is synthesized once."""
        return f'{self.model.label}-{self.origin_label}'

    def fields(self) -> dict[str, Any]:
        """What ``expect`` entries in a matrix match against."""
        return {'model': self.model.name, 'label': self.model.label, 'origin': self.origin.name,
                'img_size': self.img_size, 'patch_size': self.patch_size, 'window_size': self.window_size,
                'path': self.path, 'state': self.state}


def size_label(size: Window) -> str:
    """``7`` -> ``7``, ``(8, 12)`` -> ``8x12``."""
    return str(size) if isinstance(size, int) else f'{size[0]}x{size[1]}'


def expand(matrix: Matrix) -> list[Case]:
    """The cross product of the matrix, minus combinations that do not apply (a window size for a ViT, a patch
    size for a CNN)."""
    return list(iter_cases(matrix))


def iter_cases(matrix: Matrix) -> Iterator[Case]:
    """:func:`expand`'s cases one at a time: counting them need not hold them (``harness.spec.limits.MAX_CASES``)."""
    for model in matrix.models:
        axes = matrix.axes_for(model)
        if 'targets' in axes:
            yield from _trigger_cases(model, axes)
            continue
        family = family_of(model)
        windows = axes['window_sizes'] if family.window_sizes_apply else (None,)
        patches = axes['patch_sizes'] if family.patch_sizes_apply else (None,)
        for origin, size, patch, window, state, path in itertools.product(
                axes['origins'], axes['sizes'], patches, windows, axes['states'], axes['paths']):
            yield Case(model, origin, size, patch, window, path, state)


def _trigger_cases(model: ModelSpec, axes: dict[str, tuple]) -> list[Case]:
    """A trigger set's cases (``targets:``, :mod:`harness.spec.triggers`): each target on the paths that reach it."""
    return [Case(model, origin, t.target.img_size, t.target.patch_size, t.target.window_size, path, state)
            for origin, t, state in itertools.product(axes['origins'], axes['targets'], axes['states'])
            for path in axes['paths'] if path in t.paths]


def in_shard(cases: list[Case], selection: Selection) -> list[Case]:
    """The cases of ``selection``'s shard: checkpoints dealt round-robin in matrix order, so a checkpoint's cases
    stay together (synthesized and loaded once) and the shards get about as many checkpoints each. A zoo
    architecture's cases were dealt as it was (:class:`~harness.spec.matrix.Selection`) and are all kept."""
    if selection.shard is None:
        return cases
    groups = list(dict.fromkeys(case.group for case in cases if not case.model.zoo))
    mine = {group for i, group in enumerate(groups) if selection.deals(i)}
    return [case for case in cases if case.model.zoo or case.group in mine]


def expectation_for(case: Case, matrix: Matrix, timm_version: str) -> Expectation | None:
    """The first ``expect`` entry that matches the case under this timm release, if any."""
    fields = case.fields()
    return next((e for e in matrix.expect if e.matches(fields, timm_version)), None)

