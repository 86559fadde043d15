"""``harness run MATRIX``: every case of a matrix in pytest-xdist workers, then the report."""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from harness.analysis.compare import CompareSpec
from harness.cache import default_cache_dir
from harness.commands.common import (
    EXIT_CODES,
    EXIT_OK,
    EXIT_REGRESSION,
    EXIT_USAGE,
    UsageError,
    compare_runs,
    default_out,
    in_release_already,
    keyword_expression,
    owned_out,
    rerun_in_release,
    timm_source,
    usage_error,
    writable_out,
    write_report,
)
from harness.console import PYTEST_QUIET, CaseConsole, release_line
from harness.image_tree import ImageTreeError, read_image_tree
from harness.option_types import add_run_options, plugin_arguments
from harness.results import RESULTS_FILE, read_results
from harness.runtime.interruption import Interruption, signal_exit_code
from harness.runtime.preflight import check_device, check_matrix
from harness.runtime.run_start import RunStart
from harness.spec import one_model
from harness.spec.matrix_file import read_matrix_file
from harness.store.case_result import UNEXPECTED
from harness.store.run_record import mark_finished

EPILOG = """\
Any other option is passed to pytest (e.g. --junitxml=results.xml, -x, --maxfail=3).

One output folder holds one run: run.json records what it ran with, and a plain re-run moves the previous
results.jsonl aside as results.<its start time>.jsonl and removes the reports there (it writes its own at the
end). While a run holds its folder, another command writing it is refused; -k matching no case leaves it as it
was. --resume continues the run recorded there and refuses when timm, torch, the device, dtype, precision,
compile, channels-last, batch size, the matrix content or the --images set differ.

It prints the timm release under test, a line per case (status, case id, seconds, the reason's first line)
and a summary naming the release; warnings raised by the cases go to warnings.txt in the output folder. -v
gives pytest's own output instead.

examples:
  harness run matrices/smoke.yaml
  harness run matrices/smoke.yaml -v              # pytest's output: node ids, tracebacks, warnings summary
  harness run matrices/vit.yaml --timm 0.9.16 -k "openai_clip and patch8" --out reports/vit-0.9.16
  harness run matrices/swin.yaml -n 4 --device cuda --dtype bf16 --batch-size 64
  harness run matrices/vit.yaml --device cuda --dtype bf16 --precision cast --compile --batch-size 256
  harness run matrices/vit.yaml --resume          # after an interrupted run: skip finished cases
  harness run matrices/vit.yaml -n 2 --case-timeout 300   # a case still running after 5 min: error, go on
  harness run mine.yaml --images ~/val/    # hub/file weights: top-1 on ~/val/<class>/*.jpg at each size

""" + EXIT_CODES

def workers(text: str) -> str:
    if text in ('auto', 'logical') or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f'expected a number of worker processes >= 1 or "auto", got {text!r} (cases '
                                     f'always run in worker processes)')


def add_parser(commands) -> None:
    run = commands.add_parser('run', help='run a matrix (then write its report)', epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.set_defaults(handler=main, takes_pytest_options=True)
    run.add_argument('matrix', type=Path, nargs='?', help='YAML matrix, e.g. matrices/smoke.yaml (or --model)')
    run.add_argument('--timm', metavar='VERSION', type=timm_source,
                     help='run against this timm release from PyPI, or a timm wheel file or source tree (a folder '
                          'holding timm/), installed in an isolated cached folder (default: the installed timm)')
    run.add_argument('--out', type=Path, metavar='DIR',
                     help='folder for run.json, results.jsonl and the report, created if needed '
                          '(default: reports/<matrix name>)')
    run.add_argument('-k', metavar='EXPR', type=keyword_expression,
                     help='only cases whose id matches the pytest -k expression')
    run.add_argument('-n', metavar='N', type=workers,
                     help='worker processes (pytest-xdist), a number >= 1 or "auto" (default: 1); cases always run '
                          'in workers, so a case that crashes or hangs loses only itself')
    run.add_argument('--baseline', type=Path, metavar='DIR',
                     help='after the run, compare it with this earlier run (harness compare BASELINE OUT): the exit '
                          'code is then the compare\'s (1 on a regression or slowdown)')
    add_run_options(run.add_argument)
    run.add_argument('-q', '--quiet', action='store_true', help="pytest's one character per case instead of a line")
    run.add_argument('-v', '--verbose', action='store_true',
                     help="pytest's own output instead of the harness's lines: its header, a line per case with its "
                          "node id, tracebacks, the warnings summary")
    one_model.add_arguments(run)


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    single = one_model.from_arguments(args)
    out = _out(args, single)
    check_device(args.device)
    if args.baseline and not (args.baseline / RESULTS_FILE).is_file():
        raise UsageError(f'--baseline: {args.baseline} holds no {RESULTS_FILE}; expected the folder of an earlier '
                         f'harness run')
    if args.resume and (out / RESULTS_FILE).exists():
        read_results(out / RESULTS_FILE)   # garbage in the middle is bad input; warns of a cut-short last line
    if args.images:   # the tree itself; its labels need timm (harness.runtime.run_start)
        try:
            read_image_tree(args.images)
        except ImageTreeError as e:
            raise UsageError(f'--images: {e}') from None

    cache = args.cache or default_cache_dir()
    if in_release_already():   # the --timm child: the process the user started holds the folder
        _with_matrix(args, single, out)
        return _run(args, extra, argv, out, cache)
    with owned_out(out, '--out'):
        _with_matrix(args, single, out)
        if args.timm:
            return rerun_in_release(args.timm, cache, argv)
        return _run(args, extra, argv, out, cache)


def _out(args: argparse.Namespace, single: dict[str, Any] | None) -> Path:
    """The run's folder, checked writable: named after the matrix, or with --model after the model."""
    if single is None:
        return writable_out(args.out, default_out(args.matrix, read_matrix_file(args.matrix)), 'from the matrix name')
    return writable_out(args.out, default_out(Path('--model'), single), 'from the model name')


def _with_matrix(args: argparse.Namespace, single: dict[str, Any] | None, out: Path) -> None:
    """With --model, the one-model matrix written into the run's folder (once the run owns it) and
    ``args.matrix`` pointed at it."""
    if single is not None:
        args.matrix = one_model.write_matrix(single, out)


def _run(args: argparse.Namespace, extra: list[str], argv: list[str], out: Path, cache: Path) -> int:
    check_matrix(args.matrix, args.k, args.shard, args.full_size)   # the release under test: after --timm's re-run
    print(release_line(args.matrix, out), flush=True)
    start, interruption = RunStart(args, argv, out), Interruption()
    console = None if args.verbose or args.quiet else CaseConsole(out)
    with interruption.handling():
        exit_code = _run_cases(args, extra, [start, interruption, *([console] if console else [])], out, cache)
        if start.refused:
            raise start.refused
        if start.record is not None:
            mark_finished(out)
        if exit_code is None and start.record is None:   # the folder is as it was: nothing to report
            print('interrupted before any case ran', file=sys.stderr)
            return signal_exit_code(interruption.signum or signal.SIGINT)
        if exit_code is None:
            return _interrupted(out, argv, interruption.signum or signal.SIGINT)
        if exit_code in (EXIT_OK, EXIT_REGRESSION):
            write_report(out / RESULTS_FILE, out)
            if console is not None and start.record is not None:   # not after --collect-only
                console.write_warnings()
                print(console.summary())
            if args.baseline:
                return compare_runs(args.baseline, out, out, CompareSpec())
        return exit_code


def _run_cases(args: argparse.Namespace, extra: list[str], plugins: list, out: Path, cache: Path) -> int | None:
    """_pytest's exit code, or None when Ctrl-C or SIGTERM stopped the run: pytest reports an interrupt as 2,
    which would read as bad input. ``plugins``: the run's start, its interruption, its console if any."""
    start, interruption = plugins[:2]
    try:
        with interruption.cases_running():
            code = _pytest(args, extra, plugins, out, cache)
    except KeyboardInterrupt:   # one that came before pytest's session could catch it
        return None
    return None if interruption.signum is not None else code


def _interrupted(out: Path, argv: list[str], signum: int) -> int:
    """After Ctrl-C or SIGTERM: the finished cases are recorded; report them and say how to finish the run."""
    results = out / RESULTS_FILE
    write_report(results, out)
    kept = len(read_results(results)) if results.exists() else 0
    again = shlex.join(['harness', *argv, *([] if '--resume' in argv else ['--resume'])])
    by = '' if signum == signal.SIGINT else f' by {signal.Signals(signum).name}'
    print(f'interrupted{by}: {kept} finished case{"" if kept == 1 else "s"} kept in {results}; to finish the run: '
          f'{again}', file=sys.stderr)
    return signal_exit_code(signum)


def _pytest(args: argparse.Namespace, extra: list[str], plugins: list, out: Path, cache: Path) -> int:
    import pytest
    matrix_path = str(args.matrix)
    ini = Path(__file__).parents[1] / 'pytest.ini'
    # our own ini and rootdir: a project's pytest settings must not apply; ids read `smoke.yaml::<case>`;
    # pytest-benchmark, where installed, only warns that xdist disables it; anyio's and hypothesis's plugins
    # (anyio comes with huggingface_hub) serve no case but import their packages in every process. Cases hold
    # no asserts to rewrite and leave no unraisable exceptions to hunt: both cost seconds (rewriting imports,
    # gc at exit) per process
    pytest_args = [matrix_path, '-p', 'harness.plugin', '-c', str(ini), '--rootdir', str(Path(matrix_path).parent),
                   '-p', 'no:cacheprovider', '-p', 'no:benchmark', '-p', 'no:anyio', '-p', 'no:hypothesispytest',
                   '-p', 'no:unraisableexception', '--assert=plain',
                   '--harness-out', str(out)]
    pytest_args += ['-rfEX', '-q' if args.quiet else '-v'] if args.quiet or args.verbose else list(PYTEST_QUIET)
    pytest_args += ['-k', args.k] if args.k is not None else []
    pytest_args += plugin_arguments({**vars(args), 'cache': cache})
    # a case that crashes or hangs ends its worker, not the run: xdist starts another (every case may end one;
    # the plugin's scheduler never runs an ended case again) and the plugin records the case as error
    pytest_args += ['-n', args.n or '1', '--dist', 'loadgroup', '--max-worker-restart', str(sys.maxsize)]
    start = plugins[0]
    code = int(pytest.main(pytest_args + extra, plugins=plugins))
    if start.refused:
        return EXIT_USAGE
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return EXIT_USAGE
    if args.resume:   # the verdict covers the cases run before the interruption too
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            print('nothing left to run: every selected case already has a result')
        lost = code == pytest.ExitCode.TESTS_FAILED   # a case of this session whose record may not be written
        return max(_exit_code_from_results(out / RESULTS_FILE, start.record.matrix_name),
                   EXIT_REGRESSION if lost else EXIT_OK)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and args.shard:
        print(f'shard {args.shard} holds no case of {matrix_path}')
        return EXIT_OK
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return usage_error(f'no case of {matrix_path} matched' + (f' -k {args.k!r}' if args.k else ''))
    return int(code)


def _exit_code_from_results(results: Path, matrix_name: str) -> int:
    records = [r for r in read_results(results) if r.get('matrix') == matrix_name] if results.exists() else []
    return EXIT_REGRESSION if any(r['status'] in UNEXPECTED for r in records) else EXIT_OK
