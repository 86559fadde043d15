"""``harness run`` and ``harness report``: the command line.

Every check that needs neither torch nor timm (the arguments, the matrix file, the output folder, the
results file a --resume continues) runs before either is imported: importing timm takes seconds, and a typo
should be answered at once. The checks that need them run in pytest's controller while the xdist workers
start (:mod:`harness.run_start`). Bad input is one line ``error: <file or flag>: <problem>`` and exit code 2
(:data:`EXIT_CODES`).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shlex
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable

from packaging.version import InvalidVersion, Version

from harness import timm_versions
from harness.cache import default_cache_dir
from harness.compare import CompareError, CompareSpec, compare, exit_code, load_side
from harness.matrix_file import MatrixFileError, name_problem, read_matrix_file
from harness.results import DTYPES, RESULTS_FILE, UNEXPECTED, ResultsFileError, read_results
from harness.run_record import RunRecordError, mark_finished
from harness.run_start import RunStart, StartRefused

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_CODES = """\
exit codes:
  0    every case as expected (passed, xfailed, unsupported)
  1    some case failed, xpassed, error or resource
  2    bad input or usage, before any case runs
  130  interrupted (results kept, report written)
"""

AB_DESCRIPTION = """\
Run a matrix on two timm releases in one job on one machine and compare them (harness compare).

The checks run as `harness run --timm VERSION --no-timing` for both releases at once, into <out>/base and
<out>/new. Then one timing process per release times each case in --rounds rounds, the releases taking
turns (base, new, new, base, ...), each round a share of the case's budget, while this job holds the
machine's timing lock: a runner whose speed drifts during the job slows both alike. The samples and their
rounds are added to each run's results; <out>/compare.md and compare.json follow.

example:
  harness ab matrices/smoke.yaml --base 1.0.30 --new 1.0.31 --out reports/ab

exit codes: as harness compare (0 nothing regressed or got slower, 1 otherwise), 2 bad input, 130 interrupted
"""

BISECT_DESCRIPTION = """\
Find the two adjacent timm releases between which the selected cases' statuses change.

Each release tried runs `harness run MATRIX -k EXPR --timm VERSION --no-timing` into <out>/<version>; a
release is good when its statuses equal those at --good. Binary search over the releases between --good and
--bad, so about log2(releases) + 2 installs; --good may be the newer release (to find a fix). A release that
will not install, or where a selected case is unsupported, is skipped (as git bisect skip). Writes
<out>/bisect.json: older, newer, older_statuses, newer_statuses, untested and every release tried.

example:
  harness bisect matrices/vit.yaml -k "open_clip and patch8 and create" --good 1.0.31 --bad 0.9.16

exit codes: 0 found; 2 bad input, or the search could not start (equal outcomes at both ends)
"""

COMPARE_DESCRIPTION = """\
Compare two runs case by case (joined by matrix and case id), in the manner of asv compare.

change: regressed (passed/xfailed/unsupported -> failed/xpassed, or passed -> unsupported), fixed (the
  reverse), outputs_changed (same status; the output fingerprint or a check figure moved beyond
  --outputs-atol), unchanged, new, removed, not_comparable (error or resource on either side).
timing_change: slower/faster when the timed passes differ by a two-sided Mann-Whitney U test at --alpha AND
  the median ratio is beyond --factor; noisy when beyond the factor but not significant; same;
  not_comparable when device name, dtype, batch size, torch or TF32/cuDNN settings differ, or a run has no
  run.json.
"""

EPILOG_COMPARE = """\
Writes compare.md (regressions first) and compare.json (every case), prints a summary, and appends
compare.md to $GITHUB_STEP_SUMMARY when that is set.

examples:
  harness compare reports/vit-1.0.30 reports/vit-1.0.31
  harness compare base/results.jsonl new/results.jsonl --factor 1.05 --out compare/

exit codes:
  0    nothing regressed or got slower
  1    some case regressed, got slower, or became an error
  2    bad input or usage
"""

COVERAGE_DESCRIPTION = """\
Every architecture of a timm release (default: the installed one) with the family that claims it, its
category, the build paths and checks its cases get, and why it is unknown or fixed-size. Categories:
  oracle               a family resizes it and the harness checks the result against its own resampling
  nothing_to_resample  it accepts a new size as it is (proven by a meta-device forward pass at another size):
                       load, shapes, finiteness, drift and timing
  fixed_size           it takes only its own input size: its cases are unsupported, with the reason
  unknown              no family claims it (the reason column says why)
Decided on the meta device, without weights; the full table is cached per release (about 10 minutes on
2 CPU cores the first time). Progress goes to stderr, the table to stdout.
"""

EPILOG_RUN = """\
Any other option is passed to pytest (e.g. --junitxml=results.xml, -x, --maxfail=3).

One output folder holds one run: run.json records what it ran with, and a plain re-run moves the previous
results.jsonl aside as results.<its start time>.jsonl. --resume continues the run recorded there and refuses
when timm, torch, the device, dtype, batch size or the matrix content differ.

examples:
  harness run matrices/smoke.yaml
  harness run matrices/vit.yaml --timm 0.9.16 -k "openai_clip and patch8" --out reports/vit-0.9.16
  harness run matrices/swin.yaml -n 4 --device cuda --dtype bf16 --batch-size 64
  harness run matrices/vit.yaml --resume          # after an interrupted run: skip finished cases
  harness run matrices/vit.yaml -n 2 --case-timeout 300   # a case still running after 5 min: error, go on

""" + EXIT_CODES

_logger = logging.getLogger('harness.cli')   # not __name__, which is '__main__' under python -m harness.cli


class UsageError(Exception):
    """Bad input or a broken environment, found before any case runs: one line on stderr, exit code 2."""


# what main() turns into `error: <message>` and exit code 2
BAD_INPUT = (UsageError, StartRefused, MatrixFileError, ResultsFileError, RunRecordError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.getLogger('harness').addHandler(_OneLineWarnings())
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command != 'run' and extra:
            parser.error(f'unrecognized arguments: {" ".join(extra)}')
        if args.command == 'report':
            return _report(args)
        if args.command == 'compare':
            return _compare(args)
        if args.command == 'bisect':
            return _bisect(args)
        if args.command == 'merge':
            return _merge(args, argv)
        if args.command == 'ab':
            return _ab(args)
        if args.command == 'coverage':
            return _coverage(args, argv)
        return _run(args, extra, argv)
    except BAD_INPUT as e:
        return _usage_error(str(e))
    except KeyboardInterrupt:   # before any case started (a Ctrl-C during a case is _run_cases' to handle)
        print('interrupted before any case ran', file=sys.stderr)
        return EXIT_INTERRUPTED


class _OneLineWarnings(logging.Handler):
    """The harness's warnings as ``warning: <message>`` lines on stderr, each said once (the readers of one
    results file all meet the same cut-short last line)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = f'{record.levelname.lower()}: {record.getMessage()}'
        if line not in self.said:
            self.said.add(line)
            print(line, file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the one line ``error: <flag>: <problem>`` that all bad input gets."""

    def error(self, message: str):
        print(f'error: {message.removeprefix("argument ")}', file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an int >= 1, got {text!r}')
    return value


def _workers(text: str) -> str:
    if text in ('auto', 'logical') or (text.isdigit() and int(text) >= 1):
        return text
    raise argparse.ArgumentTypeError(f'expected a number of worker processes >= 1 or "auto", got {text!r} (cases '
                                     f'always run in worker processes)')


def _shard(text: str) -> str:
    from harness.plugin import parse_shard
    try:
        parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _bounded_float(accepts: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a float that ``accepts`` takes (nan never does), else ``expected <...>, got <text>``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}')
        return value
    return parse


_factor = _bounded_float(lambda v: 1 <= v < math.inf, 'a ratio >= 1 such as 1.1')
_probability = _bounded_float(lambda v: 0 < v < 1, 'a probability between 0 and 1 such as 0.002')
_atol = _bounded_float(lambda v: 0 <= v < math.inf, 'a tolerance >= 0 such as 1e-5')
_seconds = _bounded_float(lambda v: 0 <= v < math.inf, 'seconds >= 0 (0 = no limit)')


def _timm_release(text: str) -> str:
    """A timm release, such as 0.9.16 (``harness bisect`` searches between releases)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError('expected a timm release such as 0.9.16, got an empty string')
    try:
        Version(text)
    except InvalidVersion:
        raise argparse.ArgumentTypeError(f'{text!r} is not a release such as 0.9.16') from None
    return text


def _timm_source(text: str) -> str:
    """``--timm``: a release from PyPI, a timm wheel file or a timm source tree (returned as an absolute path)."""
    try:
        return _timm_release(text)
    except argparse.ArgumentTypeError:
        if not text.strip():
            raise
    path = Path(text.strip())
    if (path.is_file() and path.suffix == '.whl') or (path / 'timm' / '__init__.py').is_file():
        return str(path.resolve())
    if path.exists():
        raise argparse.ArgumentTypeError(f'{text!r} is neither a timm wheel (.whl) nor a timm source tree (a '
                                         f'folder holding timm/__init__.py)')
    raise argparse.ArgumentTypeError(f'{text!r} is neither a release (such as 0.9.16) nor an existing path')


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog='harness', description='Regression test-and-benchmark harness for resizing timm models: '
        'builds every case of a matrix through create_model, set_input_size and dynamic_img_size, checks '
        'loading, shapes, fidelity, parity and drift, times forward passes and writes reports.')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    run = commands.add_parser('run', help='run a matrix (then write its report)', epilog=EPILOG_RUN,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument('matrix', type=Path, help='YAML matrix, e.g. matrices/smoke.yaml')
    run.add_argument('--timm', metavar='VERSION', type=_timm_source,
                     help='run against this timm release from PyPI, or a timm wheel file or source tree (a folder '
                          'holding timm/), installed in an isolated cached folder (default: the installed timm)')
    run.add_argument('--device', choices=('cpu', 'cuda'),
                     help='default: cuda when available, else cpu; cuda without a GPU is an error')
    run.add_argument('--out', type=Path, metavar='DIR',
                     help='folder for run.json, results.jsonl and the report, created if needed '
                          '(default: reports/<matrix name>)')
    run.add_argument('-k', metavar='EXPR', help='only cases whose id matches the pytest -k expression')
    run.add_argument('-n', metavar='N', type=_workers,
                     help='worker processes (pytest-xdist), a number >= 1 or "auto" (default: 1); cases always run '
                          'in workers, so a case that crashes or hangs loses only itself')
    run.add_argument('--case-timeout', type=_seconds, default=900, metavar='SECONDS',
                     help='record a case still running after this long as error (timeout:) and go on with a fresh '
                          'worker (default: 900; 0 = no limit)')
    run.add_argument('--shard', type=_shard, metavar='K/N',
                     help="only the K-th of N shards of the cases (1-based, deterministic; a checkpoint's cases stay "
                          "in one shard), for splitting a matrix over CI jobs; harness merge joins the results")
    run.add_argument('--baseline', type=Path, metavar='DIR',
                     help='after the run, compare it with this earlier run (harness compare BASELINE OUT): the exit '
                          'code is then the compare\'s (1 on a regression or slowdown)')
    run.add_argument('--resume', action='store_true',
                     help='continue the run recorded in the output folder: skip cases that already have a result '
                          '(errors are retried); refused when its run.json differs from this run')
    run.add_argument('--batch-size', type=_positive_int, metavar='N',
                     help="timing batch size, an int >= 1 (default: the matrix's, else 1 on CPU and 8 on CUDA)")
    run.add_argument('--dtype', choices=DTYPES,
                     help="timing dtype; bf16/fp16 run under autocast (default: the matrix's)")
    run.add_argument('--no-timing', action='store_true', help='run the checks only')
    run.add_argument('--cache', type=Path, metavar='DIR',
                     help='cache for synthesized checkpoints and timm releases (default: ~/.cache/timm-harness)')
    run.add_argument('-q', '--quiet', action='store_true', help='one character per case instead of one line')

    report = commands.add_parser('report', help='write report.md, results.csv and summary.csv from results')
    report.add_argument('results', type=Path, help='a results.jsonl written by harness run')
    report.add_argument('--out', type=Path, help='output folder (default: the folder holding RESULTS)')

    ab = commands.add_parser('ab', help='two timm releases in one job: checks, interleaved timing rounds, compare',
                             description=AB_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    ab.add_argument('matrix', type=Path, help='YAML matrix')
    ab.add_argument('--base', required=True, type=_timm_source, metavar='VERSION', help='the release compared against')
    ab.add_argument('--new', required=True, type=_timm_source, metavar='VERSION', help='the release under test')
    ab.add_argument('--out', type=Path, metavar='DIR',
                    help='folder for base/, new/ and compare.* (default: reports/<matrix name>-ab)')
    ab.add_argument('--rounds', type=_positive_int, default=5, metavar='N',
                    help="timing rounds per case and release, alternating releases, each 1/N of the case's budget "
                         "(default: 5)")
    ab.add_argument('--shard', type=_shard, metavar='K/N', help='as for harness run')
    ab.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')

    merge = commands.add_parser('merge', help='join the shards of a run (harness run --shard K/N) into one run folder',
                                epilog='example:\n  harness merge reports/vit reports/vit-shard-*\n\n'
                                       'exit codes: 0 merged; 2 the shards are not one run (run.json differ in timm, '
                                       'torch, device, dtype, batch size or matrix) or share a case',
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    merge.add_argument('out', type=Path, help='the run folder to write: run.json, results.jsonl and the report')
    merge.add_argument('shards', type=Path, nargs='+', metavar='SHARD', help='the shards\' run folders')

    bisect = commands.add_parser('bisect', help='find the adjacent timm releases between which cases change',
                                 description=BISECT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    bisect.add_argument('matrix', type=Path, help='YAML matrix')
    bisect.add_argument('-k', metavar='EXPR', help='the cases to follow, a pytest -k expression (default: all)')
    bisect.add_argument('--good', required=True, type=_timm_release, metavar='VERSION',
                        help='a release whose outcome is the good one (older for a regression, newer for a fix)')
    bisect.add_argument('--bad', required=True, type=_timm_release, metavar='VERSION',
                        help='a release with another outcome')
    bisect.add_argument('--releases', metavar='V1,V2,...',
                        help='bisect among these releases only (default: every final timm release on the package '
                             'index between --good and --bad, listed with pip index versions and cached a day)')
    bisect.add_argument('--out', type=Path, metavar='DIR',
                        help='folder for bisect.json and one run folder per release (default: reports/<matrix '
                             'name>-bisect)')
    bisect.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')

    compare = commands.add_parser('compare', help='compare two runs: regressions, fixes, output and timing changes',
                                  description=COMPARE_DESCRIPTION, epilog=EPILOG_COMPARE,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_argument('base', type=Path, help='the earlier run: a run folder or its results.jsonl')
    compare.add_argument('new', type=Path, help='the later run, the same way')
    compare.add_argument('--out', type=Path, metavar='DIR',
                         help="folder for compare.md and compare.json (default: NEW's folder)")
    compare.add_argument('--factor', type=_factor, default=1.1,
                         help='a timing change needs a median ratio beyond this (default: 1.1, i.e. 10%%)')
    compare.add_argument('--alpha', type=_probability, default=0.002,
                         help="... and a two-sided Mann-Whitney U p-value below this (default: 0.002)")
    compare.add_argument('--outputs-atol', type=_atol, default=1e-5, metavar='X',
                         help='an output fingerprint or check figure moving more than this is outputs_changed '
                              '(default: 1e-5)')

    coverage = commands.add_parser('coverage', help='list every architecture of a timm release: its family and what '
                                                    'the harness checks for it', description=COVERAGE_DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    coverage.add_argument('--timm', metavar='VERSION', type=_timm_source, help='as for harness run')
    coverage.add_argument('--format', choices=('md', 'csv', 'json'), default='md',
                          help='md: a summary and one row per architecture (default); csv; json')
    coverage.add_argument('--models', nargs='+', metavar='PATTERN',
                          help='only architectures matching these glob patterns (e.g. "resnet*"), decided afresh '
                               '(default: every architecture, cached per release)')
    coverage.add_argument('--cache', type=Path, metavar='DIR', help='as for harness run')
    return parser


def _run(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    raw = read_matrix_file(args.matrix)
    out = args.out or _default_out(args.matrix, raw)
    _check_writable(out, '--out' if args.out else f'{out} (the default --out, from the matrix name)')
    if args.baseline and not (args.baseline / RESULTS_FILE).is_file():
        raise UsageError(f'--baseline: {args.baseline} holds no {RESULTS_FILE}; expected the folder of an earlier '
                         f'harness run')
    if args.resume and (out / RESULTS_FILE).exists():
        read_results(out / RESULTS_FILE)   # garbage in the middle is bad input; warns of a cut-short last line

    cache = args.cache or default_cache_dir()
    if args.timm and not os.environ.get(timm_versions.REEXEC_ENV):
        return _rerun_in_release(args.timm, cache, argv)

    start = RunStart(args, argv, out)
    exit_code = _run_cases(args, extra, start, out, cache)
    if start.refused:
        raise start.refused
    if start.matrix is not None:
        mark_finished(out)
    if exit_code is None:
        return _interrupted(out, argv)
    if exit_code in (EXIT_OK, EXIT_REGRESSION):
        _write_report(out / RESULTS_FILE, out)
        if args.baseline:
            return _compare_runs(args.baseline, out, out, CompareSpec())
    return exit_code


def _default_out(matrix_path: Path, raw: dict) -> Path:
    """``reports/<name>``. The name is checked here, before validation, since it names a folder to create."""
    name = raw.get('name')
    if not isinstance(name, str):
        raise UsageError(f'{matrix_path}: name: expected a string (it names the output folder reports/<name>), '
                         f'got {name!r}')
    problem = name_problem(name)
    if problem:
        raise UsageError(f'{matrix_path}: name: {problem}')
    return Path('reports') / name


def _check_writable(out: Path, flag: str) -> None:
    """Create ``out`` and write a file in it now: the alternative is every case failing to record its result."""
    if out.exists() and not out.is_dir():
        raise UsageError(f'{flag}: {out} is a file; expected a folder for the results and the report')
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f'{flag}: cannot create or write the folder {out} ({e.strerror}); '
                         f'expected a writable folder') from None


def _rerun_in_release(spec: str, cache: Path, argv: list[str]) -> int:
    """This command again, in a child that imports the timm ``spec`` names (--timm), installed if need be. A
    Ctrl-C reaches the child too (one process group): this process waits for it to finish its report, where
    subprocess.run would kill it."""
    try:
        site_dir, version = timm_versions.installed_timm(spec, cache)
    except timm_versions.TimmInstallError as e:
        raise UsageError(f'--timm {spec}: {e}') from None
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        return timm_versions.rerun_with(version, site_dir, argv)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_cases(args: argparse.Namespace, extra: list[str], start: RunStart, out: Path, cache: Path) -> int | None:
    """_pytest's exit code, or None when Ctrl-C stopped the run: pytest reports an interrupt as 2, which
    would read as bad input. Under xdist the workers get the signal too; this process notes it."""
    interrupted = False

    def note_interrupt(signum, frame):
        nonlocal interrupted
        interrupted = True
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, note_interrupt)
    try:
        code = _pytest(args, extra, start, out, cache)
    except KeyboardInterrupt:   # one that came before pytest's session could catch it
        return None
    finally:
        signal.signal(signal.SIGINT, previous)
    return None if interrupted else code


def _interrupted(out: Path, argv: list[str]) -> int:
    """After Ctrl-C: the finished cases are recorded; report them and say how to finish the run."""
    results = out / RESULTS_FILE
    _write_report(results, out)
    kept = len(read_results(results)) if results.exists() else 0
    again = shlex.join(['harness', *argv, *([] if '--resume' in argv else ['--resume'])])
    print(f'interrupted: {kept} finished case{"" if kept == 1 else "s"} kept in {results}; to finish the run: '
          f'{again}', file=sys.stderr)
    return EXIT_INTERRUPTED


def _pytest(args: argparse.Namespace, extra: list[str], start: RunStart, out: Path, cache: Path) -> int:
    import pytest
    matrix_path = str(args.matrix)
    ini = Path(__file__).with_name('pytest.ini')
    # our own ini and rootdir: a project's pytest settings must not apply; ids read `smoke.yaml::<case>`;
    # pytest-benchmark, where installed, only warns that xdist disables it. Cases hold no asserts to rewrite
    # and leave no unraisable exceptions to hunt: both cost seconds (rewriting imports, gc at exit) per process
    pytest_args = [matrix_path, '-p', 'harness.plugin', '-c', str(ini), '--rootdir', str(Path(matrix_path).parent),
                   '-p', 'no:cacheprovider', '-p', 'no:benchmark', '-p', 'no:unraisableexception', '--assert=plain',
                   '-rfEX',
                   '--harness-out', str(out), '--harness-cache', str(cache)]
    pytest_args.append('-q' if args.quiet else '-v')
    for flag, value in (('-k', args.k), ('--harness-device', args.device),
                        ('--harness-batch-size', args.batch_size), ('--harness-dtype', args.dtype)):
        if value is not None:
            pytest_args += [flag, str(value)]
    # a case that crashes or hangs ends its worker, not the run: xdist starts another (every case may end one;
    # the plugin's scheduler never runs an ended case again) and the plugin records the case as error
    pytest_args += ['-n', args.n or '1', '--dist', 'loadgroup', '--max-worker-restart', str(sys.maxsize),
                    '--harness-case-timeout', str(args.case_timeout)]
    if args.resume:
        pytest_args.append('--harness-resume')
    if args.shard:
        pytest_args += ['--harness-shard', args.shard]
    if args.no_timing:
        pytest_args.append('--harness-no-timing')
    code = int(pytest.main(pytest_args + extra, plugins=[start]))
    if start.refused:
        return EXIT_USAGE
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return EXIT_USAGE
    if args.resume:   # the verdict covers the cases run before the interruption too
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            print('nothing left to run: every selected case already has a result')
        return _exit_code_from_results(out / RESULTS_FILE, start.matrix.name)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and args.shard:
        print(f'shard {args.shard} holds no case of {matrix_path}')
        return EXIT_OK
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return _usage_error(f'no case of {matrix_path} matched' + (f' -k {args.k!r}' if args.k else ''))
    return int(code)


def _exit_code_from_results(results: Path, matrix_name: str) -> int:
    records = [r for r in read_results(results) if r.get('matrix') == matrix_name] if results.exists() else []
    return EXIT_REGRESSION if any(r['status'] in UNEXPECTED for r in records) else EXIT_OK


def _ab(args: argparse.Namespace) -> int:
    from harness.ab import AbError, interleave, record_samples, release, run_checks, timed_cases
    raw = read_matrix_file(args.matrix)
    out = args.out or Path(f'{_default_out(args.matrix, raw)}-ab')
    _check_writable(out, '--out' if args.out else f'{out} (the default --out, from the matrix name)')
    cache = args.cache or default_cache_dir()
    try:
        releases = [release('base', args.base, out, cache), release('new', args.new, out, cache)]
    except AbError as e:
        raise UsageError(str(e)) from None
    codes = run_checks(args.matrix, releases, cache, args.shard)
    if EXIT_INTERRUPTED in codes:
        return EXIT_INTERRUPTED
    if any(code not in (EXIT_OK, EXIT_REGRESSION) for code in codes):
        return EXIT_USAGE   # the run said why, in one line
    timing = interleave(args.matrix, releases, timed_cases(releases), args.rounds, cache)
    if timing is not None:
        for r in releases:
            timed = record_samples(r, args.rounds, timing.budget_s, timing.precision)
            print(f'ab: {timed} cases of timm {r.version} timed in {args.rounds} interleaved rounds')
            _write_report(r.out / RESULTS_FILE, r.out)
    return _compare_runs(out / 'base', out / 'new', out, CompareSpec())


def _merge(args: argparse.Namespace, argv: list[str]) -> int:
    from harness.merge import MergeError, merge_runs
    _check_writable(args.out, 'OUT')
    try:
        merged = merge_runs(args.out, args.shards, ['harness', *argv])
    except MergeError as e:
        raise UsageError(str(e)) from None
    print(f'merged {merged} cases from {len(args.shards)} shards into {args.out / RESULTS_FILE}')
    _write_report(args.out / RESULTS_FILE, args.out)
    return EXIT_OK


def _bisect(args: argparse.Namespace) -> int:
    from harness.bisect import BisectError, between, bisect, index_releases, run_outcome, to_json
    raw = read_matrix_file(args.matrix)
    out = args.out or Path(f'{_default_out(args.matrix, raw)}-bisect')
    _check_writable(out, '--out' if args.out else f'{out} (the default --out, from the matrix name)')
    cache = args.cache or default_cache_dir()

    def outcome(version: str) -> dict[str, str]:
        print(f'bisect: timm {version} ...', flush=True)
        statuses = run_outcome(args.matrix, args.k, version, out / version, cache)
        print(f'bisect: timm {version}: {_status_counts(statuses)}', flush=True)
        return statuses

    try:
        listed = [v.strip() for v in args.releases.split(',')] if args.releases else index_releases(cache)
        result = bisect(between(listed, args.good, args.bad), outcome)
    except BisectError as e:
        raise UsageError(str(e)) from None
    (out / 'bisect.json').write_text(json.dumps(to_json(result), indent=2) + '\n')
    untested = f' (untested between them: {", ".join(result.untested)})' if result.untested else ''
    print(f'bisect: the outcome changes between timm {result.older} ({_status_counts(result.older_statuses)}) and '
          f'{result.newer} ({_status_counts(result.newer_statuses)}){untested}; {len(result.tested)} releases '
          f'tried; {out / "bisect.json"}')
    return EXIT_OK


def _status_counts(statuses: dict[str, str]) -> str:
    return ', '.join(f'{n} {status}' for status, n in sorted(Counter(statuses.values()).items()))


def _compare(args: argparse.Namespace) -> int:
    out = args.out or (args.new if args.new.is_dir() else args.new.parent)
    _check_writable(out, '--out' if args.out else f'{out} (the default --out, the new run\'s folder)')
    return _compare_runs(args.base, args.new, out, CompareSpec(args.factor, args.alpha, args.outputs_atol))


def _compare_runs(base_path: Path, new_path: Path, out: Path, spec: CompareSpec) -> int:
    """Compare two runs, write compare.md/json into ``out``, say so; the compare's exit code."""
    from harness.compare_report import summary_line, write_compare
    try:
        base, new = load_side(base_path), load_side(new_path)
    except CompareError as e:
        raise UsageError(str(e)) from None
    comparisons = compare(base, new, spec)
    files = write_compare(out, base, new, spec, comparisons)
    print(f'compare: {summary_line(comparisons)}')
    print(f'report: {files.markdown}  (every case: {files.json})')
    step_summary = os.environ.get('GITHUB_STEP_SUMMARY')
    if step_summary:
        with open(step_summary, 'a') as f:
            f.write(files.markdown.read_text() + '\n')
    return exit_code(comparisons)


def _coverage(args: argparse.Namespace, argv: list[str]) -> int:
    cache = args.cache or default_cache_dir()
    if args.timm and not os.environ.get(timm_versions.REEXEC_ENV):
        return _rerun_in_release(args.timm, cache, argv)
    import timm
    from harness import coverage

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
    if args.models:
        names = coverage.selected(timm.list_models(), args.models)
        if not names:
            raise UsageError(f'--models: {" ".join(args.models)} match no architecture of timm {timm.__version__}')
        rows = coverage.covered(names, say)
    else:
        rows = coverage.release_coverage(cache, say)
    sys.stdout.write(coverage.render(rows, args.format))
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    if not args.results.is_file():
        raise UsageError(f'{args.results}: no such results file; expected a results.jsonl written by harness run')
    read_results(args.results)   # garbage in the middle is bad input: say so before the report's slow imports
    _write_report(args.results, args.out or args.results.parent)
    return EXIT_OK


def _write_report(results: Path, out: Path) -> None:
    from harness.report import write_report
    if not results.exists():
        return
    files = write_report(results, out)
    print(f'report: {files.markdown}  (tables as CSV: {files.csv}, {files.summary_csv})')


def _usage_error(message: str) -> int:
    print(f'error: {message}', file=sys.stderr)
    return EXIT_USAGE


if __name__ == '__main__':
    sys.exit(main())
