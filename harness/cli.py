"""``harness``: the command line, dispatching to one module per subcommand (:mod:`harness.commands`).

Every check that needs neither torch nor timm (the arguments, the matrix file, the output folder, the
results file a --resume continues) runs before either is imported: importing timm takes seconds, and a typo
should be answered at once. The checks that need them run in the first xdist worker, which imports both to run
cases anyway (:mod:`harness.runtime.run_start`). Bad input is one line ``error: <file or flag>: <problem>`` and
exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.commands import COMMANDS
from harness.commands.common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, usage_error
from harness.results import ResultsFileError
from harness.runtime.run_start import StartRefused
from harness.spec.matrix_file import MatrixFileError
from harness.store.run_record import RunRecordError

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
    if extra and not getattr(args, 'takes_pytest_options', False):
        parser.error(f'unrecognized arguments: {" ".join(extra)}')
    try:
        return args.handler(args, extra, argv)
    except BAD_INPUT as e:
        return usage_error(str(e))
    except KeyboardInterrupt:   # before any case started (a Ctrl-C during a case is the run command's to handle)
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


class _QuietParser(argparse.ArgumentParser):
    """argparse that raises what it refuses, for reading a recorded command line."""

    def error(self, message: str):
        raise ValueError(message)


def recorded_matrix(argv: list[str]) -> Path | None:
    """The MATRIX argument of a recorded command line (``harness run MATRIX ...``, ``harness ab MATRIX ...``,
    as run.json keeps it), read by the harness's own parser; None where it names none or the parser would refuse
    it today (a --timm wheel that is gone, ...). Handed to the commands that need it (``repro``) as
    ``args.recorded_matrix``: they sit below the command line and do not import it."""
    try:
        args, _ = _parser(_QuietParser).parse_known_args(argv[1:])
    except ValueError:
        return None
    matrix = getattr(args, 'matrix', None)
    return Path(matrix) if matrix else None


def _parser(kind: type[argparse.ArgumentParser] = _Parser) -> argparse.ArgumentParser:
    parser = kind(
        prog='harness', description='Regression test-and-benchmark harness for resizing timm models: '
        'builds every case of a matrix through create_model, set_input_size and dynamic_img_size, checks '
        'loading, shapes, fidelity, parity and drift, times forward passes and writes reports.')
    parser.set_defaults(recorded_matrix=recorded_matrix)
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


if __name__ == '__main__':
    sys.exit(main())
