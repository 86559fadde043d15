"""What a run settles before its first case, in the xdist controller while the workers start up.

The checks that need torch or timm (the matrix validated against timm's models and the origins' layouts,
its checkpoint files vetted, labelled images checked against the models' classes, the device resolved) and
the run folder made ready for this run: run.json written, an earlier run's results moved aside, or
``--resume`` checked against the run it continues.

Importing torch and timm takes seconds in every process, and the workers must import both to run cases.
So the command line does the checks that need neither before pytest starts (:mod:`harness.cli`), and
:class:`RunStart` does the rest at the start of pytest's run loop: after xdist has started the workers,
before it hands them a case. A problem stops the run there, with no case run: the command line says it in
one line and exits 2.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import timm_versions
from harness.image_tree import ImageTree, ImageTreeError, check_readable, class_indices, read_image_tree
from harness.plugin import TIMING_OPTIONS
from harness.results import RESULTS_FILE, ResultsFileError, set_aside
from harness.run_record import RUN_FILE, RunRecord, RunRecordError, describe_run, differences, read_run_record, \
    write_run_record

if TYPE_CHECKING:
    import torch

    from harness.matrix import Matrix

_logger = logging.getLogger(__name__)


class StartRefused(Exception):
    """Bad input or a broken environment found while starting the run; ``str()`` is the one line to show."""


# what stops a run before its first case, as one line
START_PROBLEMS = (StartRefused, RunRecordError, ResultsFileError)


class RunStart:
    """pytest plugin for the xdist controller (``harness run`` registers it): starts the run, or refuses it.

    ``args`` are ``harness run``'s parsed arguments, ``argv`` its command line. After the session, ``matrix``
    is the validated matrix of a started run, or ``refused`` says why the run did not start.
    """

    def __init__(self, args: argparse.Namespace, argv: list[str], out: Path):
        self.args, self.argv, self.out = args, argv, out
        self.matrix: Matrix | None = None
        self.refused: Exception | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> bool | None:
        capture = session.config.pluginmanager.getplugin('capturemanager')
        try:
            with capture.global_and_fixture_disabled():   # its messages and warnings are for the user's terminal
                self.matrix = start_run(self.args, self.argv, self.out)
        except START_PROBLEMS as e:
            self.refused = e
            return True   # xdist's loop never runs: no case is handed out, and the session ends its workers
        return None


def start_run(args: argparse.Namespace, argv: list[str], out: Path) -> Matrix:
    """Validate, resolve the device, make ``out`` this run's folder; the validated matrix."""
    problem = timm_versions.check_imported_release()
    if problem:
        raise StartRefused(f'--timm {args.timm}: {problem}')
    matrix = _validated(args.matrix)
    images = _labelled_images(args.images, matrix)
    for entry in matrix.left_out:
        print(f'{args.matrix}: {entry}: left out')
    device = _device(args.device)
    timing = matrix.timing.for_run(device.type, enabled=not args.no_timing,
                                   **{name: getattr(args, name, None) for name in TIMING_OPTIONS})
    _start_run_folder(out, describe_run(matrix, device, timing, ['harness', *argv], args.shard, images),
                      resume=args.resume)
    import harness.report  # noqa: F401 - its pandas import now, beside the workers' imports, not after the last case
    return matrix


def _validated(path: Path) -> Matrix:
    import timm

    from harness.matrix import MatrixError, load_matrix
    try:
        return load_matrix(path, known_models=timm.list_models())
    except MatrixError as e:
        raise StartRefused(str(e)) from None


def _labelled_images(flag: Path | None, matrix: Matrix) -> ImageTree | None:
    """The run's labelled images (--images, else the matrix's ``images:``): every image readable, every class
    folder one of the classes of each checkpoint with real weights."""
    where, folder = ('--images', flag) if flag else (f'{matrix.path}: images', matrix.images)
    if folder is None:
        return None
    try:
        tree = read_image_tree(Path(folder))
        check_readable(tree)
    except ImageTreeError as e:
        raise StartRefused(f'{where}: {e}') from None
    classes = _real_weights_classes(matrix)
    for checkpoint, num_classes in classes.items():
        try:
            class_indices(tree, num_classes)
        except ImageTreeError as e:
            raise StartRefused(f'{where}: {checkpoint}: {e}') from None
    if not classes:
        _logger.warning('%s: no case has real weights (hub or file), so none records accuracy: synthesized '
                        'weights have none worth measuring', where)
    return tree


def _real_weights_classes(matrix: Matrix) -> dict[str, int]:
    """The class count of each checkpoint with real weights (by case group), as timm will build its model: a
    file's ``num_classes``, else the model's (its pretrained tag's, or the matrix's override)."""
    from harness.cases import expand
    from harness.families.base import meta_model
    from harness.origins import ORIGINS
    return {case.group: case.origin.num_classes if case.origin.num_classes is not None
            else meta_model(case.model).num_classes
            for case in expand(matrix) if not ORIGINS[case.origin.name].synthesized}


def _device(asked: str | None) -> torch.device:
    import torch
    if asked == 'cuda' and not torch.cuda.is_available():
        raise StartRefused(f'--device cuda: torch {torch.__version__} sees no CUDA device '
                           f'(torch.cuda.is_available() is False); expected --device cpu or a machine with a GPU')
    return torch.device(asked or ('cuda' if torch.cuda.is_available() else 'cpu'))


def _start_run_folder(out: Path, record: RunRecord, resume: bool) -> None:
    """Make ``out`` hold this run alone. --resume continues the run recorded there, if it is the same run; a
    plain run moves an earlier run's results aside. Then run.json describes the run whose results are there."""
    previous = read_run_record(out)
    if not resume:
        moved = set_aside(out, previous.started() if previous else None)
        if moved:
            print(f'previous results moved to {moved}')
    elif previous is not None:
        changed = differences(previous, record)
        if changed:
            raise StartRefused(f'{out / RUN_FILE}: cannot --resume a different run: {"; ".join(changed)}; run '
                               f'without --resume to start over (the old results are kept aside) or use another '
                               f'--out')
        return   # the original run.json stays: its start time names these results when a re-run moves them aside
    elif (out / RESULTS_FILE).exists():
        _logger.warning('%s: no %s (a folder from an older harness): resuming without checking that timm, '
                        'torch, device, dtype, batch size and matrix are the same', out, RUN_FILE)
    write_run_record(out, record)
