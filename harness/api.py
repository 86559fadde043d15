"""``harness.run``: run a matrix from Python (a notebook, a script) and get its results as a DataFrame.

It is ``harness run`` in this process: the same checks of the input, the same workers, run folder, run.json
and report. A matrix given as a dict is written into the run folder as ``<name>.yaml`` first, as ``harness run
--model`` does (:mod:`harness.spec.one_model`), so the folder holds the matrix its results came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


class HarnessRunError(RuntimeError):
    """``harness run`` did not run the cases: bad input (exit 2; its one ``error:`` line is on stderr) or an
    interruption (exit 130)."""


def run(matrix: str | Path | dict[str, Any], out: str | Path | None = None, **options: Any) -> pd.DataFrame:
    """Run ``matrix`` (a YAML file, or the matrix as a dict) and return its results, one row per case
    (:func:`harness.results.load`). ``options`` are ``harness run``'s flags by their Python names:
    ``device='cpu'``, ``timm='0.9.16'``, ``k='create'``, ``n=2``, ``threads=1``, ``batch_size=2``,
    ``no_timing=True``, ``resume=True``, ...; ``out`` is the run folder (default ``reports/<name>``).

        >>> frame = harness.run({'name': 'mine', 'models': ['vit_base_patch16_224'], 'origins': ['timm'],
        ...                      'sizes': [384, [224, 448]]}, no_timing=True)
        >>> frame[['case_id', 'status', 'drift_cosine']]

    A case that fails is in the frame with its status; bad input or an interruption raises
    :class:`HarnessRunError`."""
    from harness import cli, results
    from harness.commands.common import default_out
    from harness.spec.matrix_file import read_matrix_file
    from harness.spec.one_model import write_matrix

    if isinstance(matrix, dict):
        folder = Path(out) if out is not None else default_out(Path('harness.run(matrix)'), matrix)
        path = write_matrix(matrix, folder)
    else:
        path = Path(matrix)
        folder = Path(out) if out is not None else default_out(path, read_matrix_file(path))
    code = cli.main(['run', str(path), '--out', str(folder), *_flags(options)])
    if code not in (0, 1):
        raise HarnessRunError(f'harness run {path} exited {code}'
                              + (': bad input (the error line above says which)' if code == 2 else ''))
    return results.load(folder / results.RESULTS_FILE)


def _flags(options: dict[str, Any]) -> list[str]:
    """``batch_size=2`` -> ``--batch-size 2``, ``k='x'`` -> ``-k x``, ``no_timing=True`` -> ``--no-timing``."""
    flags: list[str] = []
    for name, value in options.items():
        flag = f'-{name}' if len(name) == 1 else f'--{name.replace("_", "-")}'
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags
