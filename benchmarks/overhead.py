"""How much slower the harness is than the timm work it wraps (issue 6 asks for at most 1.25x).

    python benchmarks/overhead.py [--rounds 3] [--model vit_small_patch16_224] [--device cpu] [--cache DIR]

Nine cases: the model from a `timm`-origin checkpoint, paths create / set_input_size / dynamic, target
sizes 224, 288 and 224x320. Each round runs both sides as fresh processes (interpreter start and timm
import included), interleaved (harness, plain, harness, plain, ...) so a change in machine load hits both:

- harness: `harness run <matrix> --no-timing` (checks only) into a fresh output folder;
- plain:   benchmarks/plain_timm.py, the same model builds and forward passes the harness's checks make
           (the native model once; per case the path's model; per dynamic case a model built at the target
           size), from the same cached checkpoint file, on the same number of images, with nothing around them.

The checkpoint is synthesized into the cache before the first round. Prints each round and the median ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml
from common import cache_dir, default_device, environment, harness_run_s, wall_s, warm_cache
from tabulate import tabulate

from harness.checkpoints.store import source_img_size
from harness.spec.cases import expand
from harness.spec.matrix import Matrix, load_matrix
from harness.spec.vocabulary import PATHS

PLAIN = Path(__file__).with_name('plain_timm.py')
SIZES = [224, 288, [224, 320]]
TARGET_RATIO = 1.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--model', default='vit_small_patch16_224')
    parser.add_argument('--device', default=default_device())
    parser.add_argument('--cache', help="checkpoint cache (default: the harness's)")
    args = parser.parse_args()
    cache = cache_dir(args.cache)
    with tempfile.TemporaryDirectory(prefix='overhead-') as tmp:
        matrix_path = Path(tmp) / 'overhead.yaml'
        matrix_path.write_text(yaml.safe_dump({'name': 'overhead', 'models': [args.model], 'origins': ['timm'],
                                               'sizes': SIZES, 'paths': list(PATHS)}))
        matrix = load_matrix(matrix_path)
        plain = [sys.executable, str(PLAIN), json.dumps(plain_spec(matrix, cache, args.device))]
        print(f'{len(expand(matrix))} cases of {args.model}; {environment(args.device)}', flush=True)
        rows = []
        for number in range(1, args.rounds + 1):
            harness_s = harness_run_s(matrix_path, Path(tmp) / f'round{number}', cache, args.device, '--no-timing')
            plain_s = wall_s(plain)
            rows.append([number, harness_s, plain_s, harness_s / plain_s])
            print(f'round {number}: harness {harness_s:.1f} s, plain timm {plain_s:.1f} s, '
                  f'ratio {harness_s / plain_s:.2f}', flush=True)
    ratio = statistics.median(row[3] for row in rows)
    print()
    print(tabulate(rows, headers=['round', 'harness s', 'plain timm s', 'ratio'], floatfmt=('d', '.1f', '.1f', '.2f'),
                   tablefmt='github'))
    print(f'\nmedian ratio {ratio:.2f} (target <= {TARGET_RATIO}): {"OK" if ratio <= TARGET_RATIO else "OVER"}')


def plain_spec(matrix: Matrix, cache: Path, device: str) -> dict:
    """What plain_timm.py needs to repeat the matrix's builds: one model, one checkpoint, every case."""
    (checkpoint,) = warm_cache(matrix, cache)
    model = checkpoint.model
    return {'model': model.name, 'model_kwargs': model.kwargs, 'device': device, 'num_images': matrix.num_images,
            'overlay': checkpoint.pretrained_cfg_overlay(source_img_size(model)),
            'cases': [[case.path, list(case.img_size)] for case in expand(matrix)]}


if __name__ == '__main__':
    main()
