"""What a run settles before its first case: the first xdist worker describes the run, the controller readies
its folder.

The checks that need torch or timm (the imported release, the matrix validated against timm's models and the
origins' layouts, its checkpoint files vetted, labelled images checked against the models' classes, the device
resolved) and the description run.json gives (torch's settings, the device's name) need both imported.
Importing them takes seconds of CPU in every process (8 s here, torchvision half of it); the controller
imports timm once to answer a bad matrix or ``-k`` before any worker starts (:mod:`harness.runtime.preflight`), but
the run is described by the release the workers import: the worker that holds the
start request (:data:`START_REQUEST`) does these checks while it collects the matrix's cases
(:func:`check_release`, :func:`hand_over`) and hands the run's record to the controller. There
:class:`RunStart` makes the run folder ready (run.json written, an earlier run's results moved aside, or
``--resume`` checked against the run it continues) once the selection holds a case, before xdist hands out the
first. A problem on either
side stops the run there, with no case run: the command line says it in one line and exits 2.

The command line does the checks that need neither before pytest starts (:mod:`harness.cli`), and those that
need timm's model names just before (:mod:`harness.runtime.preflight`).
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import timm_versions
from harness.image_tree import ImageTree, ImageTreeError, check_readable, class_indices, read_image_tree
from harness.results import RESULTS_FILE, ResultsFileError, set_aside
from harness.runtime.isolation import RUN_REFUSED
from harness.store.run_folder import remove_reports
from harness.store.run_record import (
    RUN_FILE,
    RunRecord,
    RunRecordError,
    describe_run,
    differences,
    read_run_record,
    write_run_record,
)

if TYPE_CHECKING:
    from harness.case.work import RunOptions
    from harness.spec.matrix import Matrix

_logger = logging.getLogger(__name__)

START_REQUEST = 'harness_start'   # the workerinput key of the worker that describes the run


class StartRefused(Exception):
    """Bad input or a broken environment found while starting the run; ``str()`` is the one line to show."""


# what stops a run before its first case, as one line
START_PROBLEMS = (StartRefused, RunRecordError, ResultsFileError)


class RunStart:
    """pytest plugin for the xdist controller (``harness run`` registers it): starts the run, or refuses it.

    ``args`` are ``harness run``'s parsed arguments, ``argv`` its command line. After the session, ``record``
    describes a started run, or ``refused`` says why the run did not start.
    """

    def __init__(self, args: argparse.Namespace, argv: list[str], out: Path):
        self.args, self.argv, self.out = args, argv, out
        self.record: RunRecord | None = None
        self.refused: Exception | None = None
        self._config: pytest.Config | None = None
        self._handoff = Path(tempfile.mkdtemp(prefix='harness-start-'))   # where the worker leaves the record
        self._starter = None   # the worker describing the run, until it has

    def pytest_configure(self, config: pytest.Config) -> None:
        self._config = config

    def pytest_unconfigure(self) -> None:
        shutil.rmtree(self._handoff, ignore_errors=True)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        import harness.analysis.report  # noqa: F401 - pandas now, beside the workers' imports, not after the last case

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        """The first worker describes the run; if it dies before it has, its replacement does."""
        if self._starter is None and self.record is None and self.refused is None:
            self._starter = node
            node.workerinput[START_REQUEST] = {'timm': self.args.timm, 'argv': ['harness', *self.argv],
                                               'shard': self.args.shard, 'handoff': str(self._handoff),
                                               'images': str(self.args.images) if self.args.images else None}

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error) -> None:
        if node is self._starter:
            self._starter = None

    @pytest.hookimpl(trylast=True)
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A worker that cannot collect the matrix says why the run cannot start: the command line says it, in
        one line, so the terminal does not list it again as a collection error."""
        if not report.failed:
            return
        if self.refused is None:
            self._refuse(StartRefused(str(report.longrepr).strip()))
        errors = self._config.pluginmanager.get_plugin('terminalreporter').stats.get('error', [])
        if report in errors:
            errors.remove(report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """The describing worker has collected: ready the folder for its run, before xdist hands out a case.
        A selection of no case (``-k`` matching nothing) leaves the folder as it was: the run ends there, exit 2.
        (A shard of no case is a run: ``harness merge`` needs its run.json; a --resume's is checked.)"""
        if node is not self._starter or self.refused is not None:
            return
        if not ids and not (self.args.resume or self.args.shard):
            return
        record = read_run_record(self._handoff)
        capture = self._config.pluginmanager.getplugin('capturemanager')
        try:
            with capture.global_and_fixture_disabled():   # its messages and warnings are for the user's terminal
                start_run_folder(self.out, record, resume=self.args.resume)
        except START_PROBLEMS as e:
            self._refuse(e)
            return
        self.record = record

    def _refuse(self, problem: Exception) -> None:
        self.refused = problem
        self._config.stash[RUN_REFUSED] = True   # the scheduler hands out no case


def start_request(config: pytest.Config) -> dict | None:
    """What the worker that describes the run needs (see :class:`RunStart`); None in every other process."""
    return getattr(config, 'workerinput', {}).get(START_REQUEST)


def check_release(request: dict) -> None:
    """In a ``--timm`` re-run: the release imported must be the one asked for (before anything is judged by it)."""
    problem = timm_versions.check_imported_release()
    if problem:
        raise StartRefused(f'--timm {request["timm"]}: {problem}')


def hand_over(request: dict, matrix: Matrix, options: RunOptions) -> None:
    """Leave the run's record (:func:`describe_start`) where the controller reads it."""
    record = describe_start(matrix, options, images=request['images'], argv=request['argv'], shard=request['shard'])
    write_run_record(Path(request['handoff']), record)


def describe_start(matrix: Matrix, options: RunOptions, images: str | None, argv: list[str],
                   shard: str | None) -> RunRecord:
    """Check the device the workers will use and the labelled images (``images``: the --images flag), say which
    model entries this release leaves out; the run's record."""
    import torch
    if options.device.type == 'cuda' and not torch.cuda.is_available():
        raise StartRefused(f'--device cuda: torch {torch.__version__} sees no CUDA device '
                           f'(torch.cuda.is_available() is False); expected --device cpu or a machine with a GPU')
    tree = _labelled_images(images, matrix)
    for entry in matrix.left_out:
        options.say(f'{matrix.path}: {entry}: left out')
    return describe_run(matrix, options.device, options.timing, argv, shard, tree)


def _labelled_images(flag: str | None, matrix: Matrix) -> ImageTree | None:
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
    from harness.checkpoints.origins import origin_named
    from harness.families.base import meta_model
    from harness.spec.cases import expand
    return {case.group: case.origin.num_classes if case.origin.num_classes is not None
            else meta_model(case.model).num_classes
            for case in expand(matrix) if not origin_named(case.origin.name).synthesized}


def start_run_folder(out: Path, record: RunRecord, resume: bool) -> None:
    """Make ``out`` hold this run alone. --resume continues the run recorded there, if it is the same run; a
    plain run moves an earlier run's results aside. Either removes the reports there (:func:`remove_reports`).
    Then run.json describes the run whose results are there."""
    previous = read_run_record(out)
    if resume and previous is not None:
        changed = differences(previous, record)
        if changed:
            raise StartRefused(f'{out / RUN_FILE}: cannot --resume a different run: {"; ".join(changed)}; run '
                               f'without --resume to start over (the old results are kept aside) or use another '
                               f'--out')
    remove_reports(out)   # of the results before this run; it writes its own when it ends
    if not resume:
        moved = set_aside(out, previous.started() if previous else None)
        if moved:
            print(f'previous results moved to {moved}')
    elif previous is not None:
        return   # the original run.json stays: its start time names these results when a re-run moves them aside
    elif (out / RESULTS_FILE).exists():
        _logger.warning('%s: no %s (a folder from an older harness): resuming without checking that timm, '
                        'torch, device, dtype, batch size and matrix are the same', out, RUN_FILE)
    write_run_record(out, record)
