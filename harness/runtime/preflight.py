"""What ``harness run`` checks before pytest and its workers start, so that bad input is one ``error:`` line
in about the time the check needs rather than after a worker has started (tens of seconds on a busy machine).

- :func:`check_device`: ``--device cuda`` on a machine whose CUDA driver sees no device, asked of the driver
  library itself (milliseconds; importing torch takes seconds). Where the driver cannot say, the worker's
  torch check (:func:`harness.runtime.run_start.describe_start`) still decides.
- :func:`check_matrix`: the matrix's top level (unknown or missing keys) from the YAML alone, in a tenth of a
  second; then the matrix validated against the timm release under test and ``-k`` matched against its case
  ids. Those need timm imported (its model names, a pattern's matches, a ``timm:`` range, the sizes a model
  takes), once, in the process that will start the workers; the workers validate again against the timm they
  import, which is the same release.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

CUDA_ERROR_NO_DEVICE = 100   # cuInit's answer where the driver loads and sees no GPU
CUDA_DRIVER_LIBRARIES = ('libcuda.so.1', 'libcuda.so', 'libcuda.dylib', 'nvcuda.dll')


def cuda_driver_problem() -> str | None:
    """Why the CUDA driver certainly sees no device, or None where it sees one or cannot say."""
    for name in CUDA_DRIVER_LIBRARIES:
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        status = driver.cuInit(0)
        if status == CUDA_ERROR_NO_DEVICE:
            return 'the CUDA driver sees no device (cuInit: CUDA_ERROR_NO_DEVICE)'
        count = ctypes.c_int(0)
        if status == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value == 0:
            return 'the CUDA driver sees no device (cuDeviceGetCount: 0)'
        return None
    return f'no CUDA driver on this machine (none of {", ".join(CUDA_DRIVER_LIBRARIES)} loads)'


def check_device(device: str | None) -> None:
    if device == 'cuda' and (problem := cuda_driver_problem()):
        raise _usage_error(f'--device cuda: {problem}; expected --device cpu or a machine with a GPU')


def check_matrix(matrix_path: Path, keyword: str | None, shard: str | None, full_size: bool = False) -> None:
    """The matrix valid for the installed timm, and ``keyword`` (-k) matching at least one of its case ids
    (in ``shard``: a shard of no case is a run, see :mod:`harness.runtime.run_start`, so it is not checked there)."""
    from harness.spec.matrix import MatrixError, structure_problems
    from harness.spec.matrix_file import read_matrix_file
    problems = structure_problems(read_matrix_file(matrix_path))   # a key missing: no need to wait for timm
    if problems:
        raise _usage_error(MatrixError(matrix_path, problems).one_line())
    import timm  # imported here, once, rather than by each check

    from harness.spec.cases import expand
    from harness.spec.matrix import Selection, load_matrix
    try:
        matrix = load_matrix(matrix_path, known_models=timm.list_models(),
                             selection=Selection.of_run(shard or '', full_size))
    except MatrixError as e:
        raise _usage_error(e.one_line()) from None
    if keyword and keyword.strip() and not shard:
        ids = [case.case_id for case in expand(matrix)]
        if not any(selected(keyword, case_id, matrix_path.name) for case_id in ids):
            raise _usage_error(f'no case of {matrix_path} matched -k {keyword!r} (its {len(ids)} case ids, e.g. '
                             f'{ids[0]!r})' if ids else f'{matrix_path} holds no case')


def selected(keyword: str, case_id: str, file_name: str) -> bool:
    """Whether pytest's ``-k keyword`` selects the case: it matches the names pytest gives its item (the case id,
    the matrix file's name and the item's marker, ``xdist_group``; :class:`_pytest.mark.KeywordMatcher`)."""
    from _pytest.mark import KeywordMatcher  # pytest's own matching; not public API
    from _pytest.mark.expression import Expression
    return Expression.compile(keyword.strip()).evaluate(KeywordMatcher({case_id, file_name, 'xdist_group'}))



def _usage_error(message: str) -> Exception:
    from harness.commands.common import UsageError  # harness.commands imports this module
    return UsageError(message)
