"""Runs without YAML: ``harness run --model NAME --sizes 384,224x448`` and :func:`harness.run` (one model), and
``harness run --zoo GLOB`` (the zoo sweep, :mod:`harness.spec.zoo`).

Each builds a matrix and writes it into the run folder as ``<name>.yaml`` before the run starts, so the
folder holds the matrix its results came from: ``--resume`` (the same command again, with ``--resume``) writes
the same bytes and so matches the run's ``matrix_sha256``, and ``harness repro`` finds it through ``run.json``.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import yaml

from harness.commands.common import UsageError


def parse_sizes(text: str) -> list[int | list[int]]:
    """``384,224x448`` -> ``[384, [224, 448]]``: square sizes as one number, H x W as two."""
    sizes: list[int | list[int]] = []
    for part in text.split(','):
        sides = part.strip().lower().split('x')
        if not part.strip() or len(sides) > 2 or not all(side.isdigit() and int(side) >= 1 for side in sides):
            raise argparse.ArgumentTypeError(f'expected sizes like 384,224x448 (N or HxW, comma-separated, each '
                                             f'side >= 1), got {text!r}')
        sizes.append(int(sides[0]) if len(sides) == 1 else [int(sides[0]), int(sides[1])])
    return sizes


def add_arguments(run: argparse.ArgumentParser) -> None:
    """``harness run``'s options for a one-model run, in place of MATRIX."""
    one = run.add_argument_group('one model without a matrix file (instead of MATRIX)')
    one.add_argument('--model', metavar='NAME', help='a timm model name: run it at --sizes through every path')
    one.add_argument('--sizes', type=parse_sizes, metavar='N,HxW,...', help='target sizes, e.g. 384,224x448')
    one.add_argument('--origin', nargs='+', metavar='ORIGIN',
                     help='checkpoint layouts to synthesize (default: timm; see README: Checkpoint origins)')
    one.add_argument('--file', type=Path, metavar='CKPT', help='your checkpoint instead of a synthesized one')
    one.add_argument('--num-classes', type=int, metavar='N', help="the --file checkpoint's classes")
    zoo = run.add_argument_group('the zoo sweep without a matrix file (instead of MATRIX)')
    zoo.add_argument('--zoo', metavar='GLOB',
                     help="every architecture a family claims whose name matches GLOB ('*' for all, 'swin*'), each "
                          "in miniature through its family's trigger set (README: Zoo sweep); with --shard K/N each "
                          "shard builds only its own architectures (matrix: models: [{zoo: GLOB}])")


def matrix_dict(model: str, sizes: list, origins: list[str] | None = None, file: Path | None = None,
                num_classes: int | None = None) -> dict[str, Any]:
    """The one-model matrix: named after the model, every build path."""
    chosen: list[Any] = list(origins or ([] if file else ['timm']))
    if file is not None:
        chosen.append({'file': str(Path(file).resolve()),
                       **({'num_classes': num_classes} if num_classes is not None else {})})
    return {'name': model, 'models': [model], 'origins': chosen, 'sizes': sizes}


def zoo_matrix(glob: str) -> dict[str, Any]:
    """The zoo sweep's matrix: ``zoo-sweep`` for every architecture, else named after the glob."""
    name = 'zoo-sweep' if glob == '*' else 'zoo-' + re.sub(r'[^A-Za-z0-9_.-]', '_', glob)[:50]
    return {'name': name, 'models': [{'zoo': glob}], 'origins': ['timm']}


def from_arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    """The matrix ``args`` ask for (one model, or the zoo sweep), None when they name a MATRIX file; UsageError
    for a mix."""
    if args.zoo is not None:
        if args.matrix is not None or args.model is not None:
            raise UsageError(f'--zoo: expected one of a MATRIX file, --model or --zoo; got '
                             f'{"MATRIX " + str(args.matrix) if args.matrix is not None else "--model " + args.model}'
                             f' too')
        return zoo_matrix(args.zoo)
    if args.model is None:
        stray = [flag for flag, value in (('--sizes', args.sizes), ('--origin', args.origin), ('--file', args.file),
                                          ('--num-classes', args.num_classes)) if value is not None]
        if args.matrix is None:
            raise UsageError('expected a MATRIX file, --model NAME --sizes N,HxW,... for one model, or --zoo GLOB')
        if stray:
            raise UsageError(f'{stray[0]}: only with --model NAME (a MATRIX file sets its own)')
        return None
    if args.matrix is not None:
        raise UsageError(f'--model: expected either a MATRIX file ({args.matrix}) or --model, not both')
    if args.sizes is None:
        raise UsageError('--model: expected --sizes too, e.g. --sizes 384,224x448')
    if args.num_classes is not None and args.file is None:
        raise UsageError('--num-classes: only with --file CKPT (the classes of your checkpoint)')
    return matrix_dict(args.model, args.sizes, args.origin, args.file, args.num_classes)


def write_matrix(matrix: dict[str, Any], out: Path) -> Path:
    """``<out>/<name>.yaml``, the same bytes for the same matrix."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f'{matrix["name"]}.yaml'
    how = '--zoo: the zoo sweep' if any('zoo' in entry for entry in matrix['models'] if isinstance(entry, dict)) \
        else '--model: the one-model matrix'
    path.write_text(f'# written by harness run {how} of this run\n'
                    + yaml.safe_dump(matrix, sort_keys=False, default_flow_style=None))
    return path
