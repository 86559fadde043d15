"""Assemble a repro script: a header saying what failed where, the case as constants, the carried functions,
and a ``main()`` that runs the case's steps by name (source checkpoint, its layout, the path, the checks)."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any

from harness.case.check_registry import REGISTRY
from harness.origins import FILE_ORIGIN, ORIGINS
from harness.repro import steps
from harness.repro.case import ReproCase, repro_case
from harness.repro.history import summary
from harness.repro.inline import WIDTH, assignment, carried, import_lines
from harness.repro.layouts import WRITERS
from harness.repro.snippets import Snippet, as_tuples, create_path, literal, snippet_for
from harness.repro.sources import CaseSource


def render_script(found: CaseSource, command: str) -> str:
    case = repro_case(found)
    recorded = [c for c in REGISTRY if c in (found.record.get('failed_checks') or [])]   # in the order they run
    built = [check for check in recorded if REGISTRY[check].repro_built]   # building the path is the check
    snippets = {check: snippet_for(case, check) for check in recorded if check not in built}
    missing = [check for check, snippet in snippets.items() if snippet is None]
    plan = _Plan(case, [s for s in snippets.values() if s is not None], missing,
                 smooth=any(REGISTRY[check].weight_values for check in recorded),
                 builds_path=bool(missing) or bool(built))
    body = [*carried(plan.functions()), plan.main(),
            f"if __name__ == '__main__':\n    sys.exit(run(main, {recorded!r}))"]
    code = '\n\n'.join([_constants(case), *body])   # one blank line between definitions: a script to paste
    imports = '\n'.join(['from __future__ import annotations', '', *import_lines(code)])
    return f'{_header(found, case, recorded, missing, command)}\n{imports}\n\n{code}\n'


@dataclass
class _Plan:
    """What the script's main() builds, and so which functions it carries."""
    case: ReproCase
    snippets: list[Snippet]
    missing: list[str]        # the recorded checks no snippet covers
    smooth: bool              # the checks depend on the weights' values: the source must look trained
    builds_path: bool = True  # a recorded check is building the path (load, resize), or has no snippet

    @property
    def needs_path(self) -> bool:
        """Whether the case's path is built at all: not for checks of the checkpoint's own model alone (reload,
        noop), which an old release can fail where it cannot build the path (an unsupported path, a failed
        invariant)."""
        return self.builds_path or self.forward_pass or self.uses('model')

    def uses(self, name: str) -> bool:
        return any(name in snippet.uses for snippet in self.snippets)

    @property
    def forward_pass(self) -> bool:
        return self.case.path == 'dynamic' or self.uses('outputs')   # dynamic resamples during the pass

    @property
    def synthesized(self) -> bool:
        return ORIGINS[self.case.origin.name].synthesized

    def functions(self) -> list:
        functions = [steps.run, steps.verdict]
        if self.synthesized:
            functions += [*([steps.trained_looking] if self.smooth else []), WRITERS[self.case.origin.name]]
        elif self.case.origin.name == FILE_ORIGIN and self.uses('reference'):
            functions.append(steps.file_reference)
        functions += [steps.pretrained, *([steps.set_input_size] if self.case.path == 'set_input_size'
                                          and self.needs_path else [])]
        functions += [steps.images, steps.forward] if self.forward_pass else []
        functions += [f for snippet in self.snippets for f in snippet.functions]
        return functions + ([steps.not_inlined] if self.missing else [])

    def main(self) -> str:
        path = _path_lines(self.case)
        if not (self.forward_pass or self.uses('model')):   # building it is the check (load, resize)
            path = [line.removeprefix('model = ') for line in path]
        lines = [*self._source_lines(), *(["# 3. the case's path", *path] if self.needs_path else [])]
        if self.forward_pass:
            lines += ['inputs = images(TARGET_SIZE)', 'outputs = forward(model, inputs)']
        if self.snippets or self.missing:
            lines += ['# 4. the checks that failed', *(line for s in self.snippets for line in s.lines)]
        lines += [f'not_inlined({check!r}, {self.case.family_name!r})' for check in self.missing]
        return 'def main(workdir: Path) -> None:\n' + '\n'.join(f'    {line}' for line in lines)

    def _source_lines(self) -> list[str]:
        """Steps 1 and 2: the checkpoint, its file and ``overlay`` (what points timm at it); ``reference`` (its
        timm state dict) and ``native`` (loaded at its own configuration) when used."""
        case, origin = self.case, self.case.origin
        native = ['native = pretrained(MODEL, SOURCE, overlay)   # the checkpoint at its own configuration']
        if not self.synthesized:
            where = 'file=CHECKPOINT, ' if origin.name == FILE_ORIGIN else ''
            what = "the user's checkpoint" if where else "timm's pretrained weights for MODEL (downloaded)"
            overlay = f'dict({where}{_overlay_tail(case, origin.num_classes)})' if where else 'None'
            lines = [f'# 1-2. {what}: what it holds is the reference', f'overlay = {overlay}']
            reference = 'file_reference(CHECKPOINT, native)' if where else 'native.state_dict()'
            if self.uses('reference') or self.uses('native') or case.path == 'set_input_size':
                lines += [*native, *([f'reference = {reference}'] if self.uses('reference') else [])]
            return lines
        writer = WRITERS[origin.name].__name__
        lines = ['# 1. the source checkpoint: MODEL at its own configuration'
                 + (', with weights that look trained' if self.smooth else ' (its values do not matter here)'),
                 'source = timm.create_model(MODEL, pretrained=False, **SOURCE)',
                 *(['trained_looking(source)'] if self.smooth else []),
                 f'# 2. saved as {origin.name} releases store it'
                 + ('; `reference` is what a correct loader recovers' if self.uses('reference') else ''),
                 f'file = workdir / {ORIGINS[origin.name].filename!r}',
                 f'reference = {writer}(source, file)' if self.uses('reference') else f'{writer}(source, file)',
                 f'overlay = dict(file=str(file), {_overlay_tail(case, "source.num_classes")})']
        return lines + (native if case.path == 'set_input_size' or self.uses('native') else [])


def _constants(case: ReproCase) -> str:
    source_size = case.source.img_size if case.source else case.record.get('source_img_size') or ()
    overrides = assignment('SOURCE', {k: as_tuples(v) for k, v in case.model.kwargs.items()})
    lines = [f'MODEL = {case.model.name!r}', "# the checkpoint's own configuration: constructor overrides", overrides,
             f'SOURCE_SIZE, TARGET_SIZE = {literal(source_size)}, {literal(case.target.img_size)}']
    if case.origin.name == FILE_ORIGIN:
        lines += ["# the user's file (a path as long as it is)", f'CHECKPOINT = {case.origin.file!r}']
    return '\n'.join(lines)


def _overlay_tail(case: ReproCase, num_classes: Any) -> str:
    """The rest of the ``pretrained_cfg_overlay`` the harness gives timm: the class count stored in the file, the
    size it was trained at (when the matrix sets one), whether the model's own loader reads it."""
    parts = [f'num_classes={num_classes}'] if num_classes is not None else []
    if 'img_size' in case.model.kwargs:
        parts.append('input_size=(3, *SOURCE_SIZE)')
    custom_load = case.origin.custom_load or ORIGINS[case.origin.name].custom_load
    return ', '.join([*parts, f'custom_load={custom_load}'])


def _path_lines(case: ReproCase) -> list[str]:
    if case.path == 'create':
        return [f'model = {create_path(case)}']
    if case.path == 'set_input_size':
        kwargs = case.family.set_input_size_kwargs(case.target, case.source) if case.family else case.create_kwargs()
        return [f'model = set_input_size(native, {{{_call(kwargs, ": ")}}})']
    return ["model = pretrained(MODEL, dict(SOURCE, dynamic_img_size=True), overlay)   # fed TARGET_SIZE images"]


def _header(found: CaseSource, case: ReproCase, recorded: list[str], missing: list[str], command: str) -> str:
    record, source = found.record, case.source
    patch = f' (patch {source.patch_size[0]})' if source and case.family.patch_sizes_apply else ''
    trained = f' trained at {_size(source.img_size)}{patch}' if source else ''
    tolerances = f'those of {found.matrix_path}' if found.matrix_path else f'the defaults ({found.matrix_problem})'
    notes = ['Needs only torch and timm (another release: put it first on PYTHONPATH). Exit 1: the failure '
             'reproduces (the failing check is named, even another one); 0: the case passes; 125: it cannot be built '
             "or tested on this release (git bisect's skip)."]
    if ORIGINS[case.origin.name].synthesized:
        notes.append("A synthesized checkpoint (seeded, smooth where resizing matters) gives other figures than the "
                     "harness's, the same failure.")
    notes.append(f'Tolerances: {tolerances}.')
    if missing:
        notes.append(f'Not inlined: the {", ".join(missing)} oracle of the {case.family_name} family (exit 125 '
                     f'rather than a pass it cannot vouch for).')
    about = [f'{case.model.name}({_call(case.model.kwargs)}), a checkpoint in the {record["origin"]} layout'
             f'{trained}, built at {_size(case.target.img_size)} by {_path_words(case)}.',
             f'Recorded on timm {record.get("timm_version") or "?"}: {record["status"]}: '
             f'{_short(record.get("reason") or "")}',
             f'Releases: {summary(found.history)}.']
    paragraphs = ['\n'.join(map(_fill, about)), _fill(' '.join(notes)), _fill(f'Generated by: {command}')]
    return f'#!/usr/bin/env python3\n"""Reproduce {record["case_id"]}\n\n' + '\n\n'.join(paragraphs) + '\n"""'


def _fill(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_on_hyphens=False, break_long_words=False)


def _path_words(case: ReproCase) -> str:
    if case.path == 'create':
        return f'timm.create_model(..., pretrained=True, {_call(case.create_kwargs())})'
    if case.path == 'set_input_size':
        return 'create_model at its own configuration, then model.set_input_size(...)'
    return f'create_model(..., dynamic_img_size=True), fed {_size(case.target.img_size)} images'


def _call(kwargs: dict[str, Any], between: str = '=') -> str:
    """``img_size=(64, 512), patch_size=8`` (``between=': '``: the inside of a dict literal, keys quoted)."""
    return ', '.join(f'{k if between == "=" else repr(k)}{between}{literal(v)}' for k, v in kwargs.items())


def _size(size) -> str:
    return f'{size[0]}x{size[1]}'


def _short(text: str, limit: int = 160) -> str:
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + '…'
