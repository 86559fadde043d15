"""``harness run`` and ``harness report``: the command line.

Exit codes: 0 every case as expected, 1 some case failed unexpectedly (failed, xpassed or error),
2 bad input or usage (invalid matrix, unknown option, timm release that cannot be installed).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from harness.results import RESULTS_FILE, UNEXPECTED, read_results

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE = 0, 1, 2

EPILOG_RUN = """\
Any other option is passed to pytest (e.g. --junitxml=results.xml, -x, --maxfail=3).

examples:
  harness run matrices/smoke.yaml
  harness run matrices/vit.yaml --timm 0.9.16 -k "openai_clip and patch8" --out reports/vit-0.9.16
  harness run matrices/swin.yaml -n 4 --device cuda --dtype bf16 --batch-size 64
  harness run matrices/vit.yaml --resume          # after an interrupted run: skip finished cases
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == 'report':
        if extra:
            parser.error(f'unrecognized arguments: {" ".join(extra)}')
        return _report(args)
    return _run(args, extra, argv)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='harness', description='Regression test-and-benchmark harness for resizing timm models: '
        'builds every case of a matrix through create_model, set_input_size and dynamic_img_size, checks '
        'loading, shapes, fidelity, parity and drift, times forward passes and writes reports.')
    commands = parser.add_subparsers(dest='command', metavar='COMMAND')

    run = commands.add_parser('run', help='run a matrix (then write its report)', epilog=EPILOG_RUN,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument('matrix', type=Path, help='YAML matrix, e.g. matrices/smoke.yaml')
    run.add_argument('--timm', metavar='VERSION',
                     help='run against this timm release from PyPI, installed in an isolated cached folder '
                          '(default: the installed timm)')
    run.add_argument('--device', choices=('cpu', 'cuda'), help='default: cuda when available, else cpu')
    run.add_argument('--out', type=Path, help='folder for results.jsonl and the report '
                                              '(default: reports/<matrix name>)')
    run.add_argument('-k', metavar='EXPR', help='only cases whose id matches the pytest -k expression')
    run.add_argument('-n', metavar='N', help='parallel workers (pytest-xdist), a number or "auto"')
    run.add_argument('--resume', action='store_true',
                     help='skip cases that already have a result in the output folder (errors are retried)')
    run.add_argument('--batch-size', type=int, metavar='N', help="timing batch size (default: the matrix's)")
    run.add_argument('--dtype', choices=('fp32', 'bf16', 'fp16'),
                     help="timing dtype; bf16/fp16 run under autocast (default: the matrix's)")
    run.add_argument('--no-timing', action='store_true', help='run the checks only')
    run.add_argument('--cache', type=Path, metavar='DIR',
                     help='cache for synthesized checkpoints and timm releases (default: ~/.cache/timm-harness)')
    run.add_argument('-q', '--quiet', action='store_true', help='one character per case instead of one line')

    report = commands.add_parser('report', help='write report.md, results.csv and summary.csv from results')
    report.add_argument('results', type=Path, help='a results.jsonl written by harness run')
    report.add_argument('--out', type=Path, help='output folder (default: the folder holding RESULTS)')
    return parser


def _run(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness import timm_versions
    from harness.plugin import default_cache_dir
    cache = args.cache or default_cache_dir()
    if args.timm and not os.environ.get(timm_versions.REEXEC_ENV):
        try:
            site_dir = timm_versions.installed_release(args.timm, cache)
        except timm_versions.TimmInstallError as e:
            return _usage_error(str(e))
        return timm_versions.rerun_with(args.timm, site_dir, argv)
    problem = timm_versions.check_imported_release()
    if problem:
        return _usage_error(problem)

    matrix = _validated(args.matrix)
    if matrix is None:
        return EXIT_USAGE
    out = args.out or Path('reports') / matrix.name
    exit_code = _pytest(args, extra, matrix.path, matrix.name, out, cache)
    if exit_code in (EXIT_OK, EXIT_REGRESSION):
        _write_report(out / RESULTS_FILE, out)
    return exit_code


def _validated(path: Path):
    import timm
    from harness.matrix import MatrixError, load_matrix
    try:
        return load_matrix(path, known_models=timm.list_models())
    except MatrixError as e:
        print(f'error: {e}', file=sys.stderr)
        return None


def _pytest(args: argparse.Namespace, extra: list[str], matrix_path: str, matrix_name: str, out: Path,
            cache: Path) -> int:
    import pytest
    ini = Path(__file__).with_name('pytest.ini')
    # our own ini and rootdir: a project's pytest settings must not apply; ids read `smoke.yaml::<case>`
    pytest_args = [matrix_path, '-p', 'harness.plugin', '-c', str(ini), '--rootdir', str(Path(matrix_path).parent),
                   '-p', 'no:cacheprovider', '-W', 'ignore::pytest.PytestAssertRewriteWarning', '-rfEX',
                   '--harness-out', str(out), '--harness-cache', str(cache)]
    pytest_args.append('-q' if args.quiet else '-v')
    for flag, value in (('-k', args.k), ('--harness-device', args.device),
                        ('--harness-batch-size', args.batch_size), ('--harness-dtype', args.dtype)):
        if value is not None:
            pytest_args += [flag, str(value)]
    if args.n is not None:
        pytest_args += ['-n', str(args.n), '--dist', 'loadgroup']
    if args.resume:
        pytest_args.append('--harness-resume')
    if args.no_timing:
        pytest_args.append('--harness-no-timing')
    code = int(pytest.main(pytest_args + extra))
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED, pytest.ExitCode.NO_TESTS_COLLECTED):
        return EXIT_USAGE
    if args.resume:   # the verdict covers the cases run before the interruption too
        if code == pytest.ExitCode.NO_TESTS_COLLECTED:
            print('nothing left to run: every selected case already has a result')
        return _exit_code_from_results(out / RESULTS_FILE, matrix_name)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return _usage_error(f'no case of {matrix_path} matched' + (f' -k {args.k!r}' if args.k else ''))
    return int(code)


def _exit_code_from_results(results: Path, matrix_name: str) -> int:
    records = [r for r in read_results(results) if r.get('matrix') == matrix_name] if results.exists() else []
    return EXIT_REGRESSION if any(r['status'] in UNEXPECTED for r in records) else EXIT_OK


def _report(args: argparse.Namespace) -> int:
    if not args.results.is_file():
        return _usage_error(f'{args.results}: no such results file')
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
