"""What the subcommands share: exit codes, bad-input errors, argument types and the steps several commands take
(checking an output folder, re-running in another timm release, writing a report, comparing two runs)."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from packaging.version import InvalidVersion, Version

from harness import faults, timm_versions
from harness.analysis.compare import CompareError, CompareSpec, compare, exit_code, load_side, shared_shift
from harness.spec.matrix_file import name_problem

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXIT_CODES = """\
exit codes:
  0    every case as expected (passed, xfailed, unsupported)
  1    some case failed, xpassed, error or resource
  2    bad input or usage, before any case runs (the output folder left as it was), or the output folder
       in use by another harness command
  130  interrupted by Ctrl-C: finished results kept, report written, a line says how to --resume
  143  terminated by SIGTERM (CI cancellation, timeout, docker stop): as 130
"""


class UsageError(Exception):
    """Bad input or a broken environment, found before any case runs: one line on stderr, exit code 2."""


def usage_error(message: str) -> int:
    """Say what was wrong, as every piece of bad input is said; the exit code for it."""
    print(f'error: {message}', file=sys.stderr)
    return EXIT_USAGE


# --- argument types: each says what it expected, in argparse's one-line error --------------------------------
def keyword_expression(text: str) -> str:
    """``-k``: an expression pytest can match case ids with, checked before anything starts (a worker meeting a
    malformed one would end the run in an INTERNALERROR traceback)."""
    from _pytest.mark.expression import Expression  # the parser pytest's -k uses; not public API
    try:
        Expression.compile(text.strip())   # pytest strips leading space; an empty expression selects all
    except SyntaxError as e:
        raise argparse.ArgumentTypeError(f'{text!r} is not a pytest -k expression: at column {e.offset}: '
                                         f'{e.msg}') from None
    if '=' in text:   # outside a string only in name(key=value): -k matches names, so pytest refuses these
        raise argparse.ArgumentTypeError(f'{text!r}: -k expressions match names and take no call parameters '
                                         f'(name(key=value))')
    return text


def timm_release(text: str) -> str:
    """A timm release, such as 0.9.16 (``harness bisect`` searches between releases)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError('expected a timm release such as 0.9.16, got an empty string')
    try:
        Version(text)
    except InvalidVersion:
        raise argparse.ArgumentTypeError(f'{text!r} is not a release such as 0.9.16') from None
    return text


def timm_source(text: str) -> str:
    """``--timm``: a release from PyPI, a timm wheel file or a timm source tree (returned as an absolute path)."""
    try:
        return timm_release(text)
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


# --- steps several commands take --------------------------------------------------------------------------------
def default_out(matrix_path: Path, raw: dict, suffix: str = '') -> Path:
    """``reports/<name><suffix>``. The name is checked here, before validation, since it names a folder to
    create."""
    name = raw.get('name')
    if not isinstance(name, str):
        raise UsageError(f'{matrix_path}: name: expected a string (it names the output folder reports/<name>), '
                         f'got {name!r}')
    problem = name_problem(name)
    if problem:
        raise UsageError(f'{matrix_path}: name: {problem}')
    return Path('reports') / f'{name}{suffix}'


def writable_out(out: Path | None, default: Path, what_default_is: str) -> Path:
    """``--out`` (or the default), created and proven writable now: the alternative is every case failing to
    record its result."""
    flag = '--out' if out else f'{default} (the default --out, {what_default_is})'
    out = out or default
    check_writable(out, flag)
    return out


def check_writable(out: Path, flag: str) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f'{flag}: {out} is a file; expected a folder for the results and the report')
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise UsageError(f'{flag}: cannot create or write the folder {out} ({e.strerror}); '
                         f'expected a writable folder') from None


@contextlib.contextmanager
def owned_out(out: Path, flag: str) -> Iterator[None]:
    """Hold the output folder for the body (:mod:`harness.store.run_folder`): a second command writing it is refused."""
    from harness.runtime.device_lock import Holder
    from harness.store.run_folder import FolderInUse, owning
    try:
        with owning(out, Holder.this_process()):
            yield
    except FolderInUse as e:
        raise UsageError(f'{flag}: {out} is {e}; expected a folder no other harness command is writing: wait for '
                         f'it to end or use another folder') from None


def in_release_already() -> bool:
    """Whether this process is the child that ``--timm`` started (it imports the requested release)."""
    return bool(os.environ.get(timm_versions.REEXEC_ENV))


def rerun_in_release(spec: str, cache: Path, argv: list[str]) -> int:
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


def write_report(results: Path, out: Path) -> None:
    from harness.analysis.report import write_report as write
    if not results.exists():
        return
    try:
        files = write(results, out)
    except OSError as e:
        if not faults.is_disk_full(e):
            raise
        print(f'error: disk full: the report could not be written in {out} ({e}); the results it would report are '
              f'in {results}', file=sys.stderr)
        return
    print(f'report: {files.markdown}, with plots: {files.html}  (tables as CSV: {files.csv}, {files.summary_csv})')


def compare_runs(base_path: Path, new_path: Path, out: Path, spec: CompareSpec) -> int:
    """Compare two runs, write compare.md/json into ``out``, say so; the compare's exit code."""
    from harness.analysis.compare_report import summary_line, write_compare
    try:
        base, new = load_side(base_path), load_side(new_path)
    except CompareError as e:
        raise UsageError(str(e)) from None
    comparisons = compare(base, new, spec)
    files = write_compare(out, base, new, spec, comparisons)
    print(f'compare: {summary_line(comparisons)}')
    warning = shared_shift(base, new, comparisons)
    if warning:
        print(f'warning: {warning}')
    print(f'report: {files.markdown}  (every case: {files.json})')
    step_summary = os.environ.get('GITHUB_STEP_SUMMARY')
    if step_summary:
        with open(step_summary, 'a') as f:
            f.write(files.markdown.read_text() + '\n')
    return exit_code(comparisons)
