"""A failed case as repro snippets see it: the case from its matrix (or rebuilt from its record), its family's
geometry for it, the run's tolerances and how its path resamples."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness.case.paths import AFTER_LOAD_RESAMPLING
from harness.checkpoints.origins import FILE_ORIGIN, origins
from harness.checkpoints.store import loader_resampling
from harness.families import Geometry, Target, family_of, to_size
from harness.families.base import Family, native_geometry
from harness.repro.sources import CaseSource, ReproError
from harness.spec.cases import Case, expand
from harness.spec.matrix import MatrixError, ModelSpec, OriginSpec, Selection, Tolerances, load_matrix, window_value
from harness.states import DEFAULT_STATE, scaled_tolerances


@dataclass(frozen=True)
class ReproCase:
    record: dict[str, Any]              # the case's line of results.jsonl
    model: ModelSpec                    # the checkpoint's model and its own configuration
    origin: OriginSpec
    family: Family | None               # None: no family claims the model in the installed timm
    source: Geometry | None             # the checkpoint's own geometry
    target: Target
    computed: Geometry | None           # what the path is documented to compute with at the target
    tolerances: Tolerances
    interpolation: str                  # how the case's path resamples: the origin's loader at create time, ...
    antialias: bool                     # ... timm's defaults after loading

    @property
    def path(self) -> str:
        return self.record['path']

    @property
    def family_name(self) -> str:
        return self.family.name if self.family else 'unknown'

    def create_kwargs(self) -> dict[str, Any]:
        """What ``create_model`` is given beyond the source configuration to build the target."""
        return self.family.create_kwargs(self.target) if self.family else {'img_size': self.target.img_size}


def repro_case(found: CaseSource) -> ReproCase:
    record = found.record
    case, tolerances = _matrix_case(found)
    if case is None:
        model = ModelSpec.of(record.get('model_name') or record['model'], record.get('model_overrides') or {})
        window = record.get('window_size')
        target = Target(to_size(record['img_size']), record.get('patch_size'),
                        window_value(to_size(window)) if window is not None else None)
        case = Case(model, _origin(record['origin'], found.matrix_problem), target.img_size, target.patch_size,
                    target.window_size, record['path'], record.get('state') or DEFAULT_STATE)
    _require_writer(case.origin.name)
    family = family_of(case.model)
    source = native_geometry(family, case.model) if family else None
    computed = family.computed_geometry(source, case.target, case.path) if family else None
    resampling = _create_resampling(family, case) if case.path == 'create' else AFTER_LOAD_RESAMPLING
    tolerances = scaled_tolerances(tolerances.for_path(case.path, record.get('device') or 'cpu'), case.state)
    return ReproCase(record, case.model, case.origin, family, source, case.target, computed, tolerances, *resampling)


@dataclass(frozen=True)
class _Loader:
    """How the origin's loader resamples, as a family's ``create_resampling`` reads a checkpoint's."""
    interpolation: str
    antialias: bool


def _create_resampling(family: Family | None, case: Case) -> tuple[str, bool]:
    """(interpolation, antialias) of the create path, as the pipeline has it: the origin's loader's, unless the
    family says timm chooses per model (FlexiViT and RADIO ViTs resample bilinear without antialiasing)."""
    loader = _Loader(*loader_resampling(case.origin))
    return family.create_resampling(case.model.name, loader) if family else (loader.interpolation, loader.antialias)


def _matrix_case(found: CaseSource) -> tuple[Case | None, Tolerances]:
    """The case as its matrix defines it, with the matrix's tolerances (None and the defaults without one)."""
    if found.matrix_path is None:
        return None, Tolerances()
    try:
        name = found.record.get('model_name')   # only its entries are validated: a zoo holds a whole release
        matrix = load_matrix(found.matrix_path, selection=Selection(
            full_size=bool(found.run and found.run.full_size), names=(name,) if name else None))
    except MatrixError:
        return None, Tolerances()
    case = next((c for c in expand(matrix) if c.case_id == found.record['case_id']), None)
    return case, matrix.tolerances


def _require_writer(label: str) -> None:
    """A script saves a synthesized origin's source checkpoint with the origin's compact writer."""
    known = origins().get(label)
    if known is not None and known.synthesized and known.repro_writer is None:
        raise ReproError(f'no script for {label} checkpoints yet: a script saves its source checkpoint with a '
                         f'compact writer of the origin\'s layout, and {label} registers none (its module in '
                         f'harness/checkpoints/origins/); the run\'s report and results.jsonl hold the case')


def _origin(label: str, matrix_problem: str | None) -> OriginSpec:
    if label in origins() and label != FILE_ORIGIN:
        return OriginSpec(label)
    raise ReproError(f'the case loads a checkpoint file ({label}) that only its matrix names, and '
                     f'{matrix_problem or "the matrix holds no such case"}')
