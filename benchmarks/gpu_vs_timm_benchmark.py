"""The harness's timing against timm's own benchmark.py, on one machine in one run (issue 9).

    python benchmarks/gpu_vs_timm_benchmark.py PATH/TO/benchmark.py [--device cuda] [--batch-size 256]
        [--models vit_base_patch16_224,swin_base_patch4_window7_224] [--precisions amp,cast] [--dtype bf16]
        [--img-size 224] [--budget-s 20] [--bench-iter 200] [--out DIR] [--model-kwargs K=V ...]

benchmark.py is in timm's source repository, not in its wheel: take it at the tag of the installed release,
e.g. for timm 1.0.31 `git show v1.0.31:benchmark.py` in a clone of huggingface/pytorch-image-models. For each
precision the harness times every model in one `harness run` (amp: autocast, as benchmark.py `--amp
--amp-dtype bfloat16`; cast: weights and inputs in the dtype, as benchmark.py `--precision bfloat16`), then
benchmark.py times each model (`--bench inference`) at the same batch and input size. Printed per model and
precision: both images/s, their ratio, the harness's CV, TFLOP/s and fraction of the device's datasheet peak;
then whether the issue's targets hold: the harness within ±3% of benchmark.py and a CV under 1%. Exit code 1
when one is missed.

About 4-5 minutes on an H100 (two harness runs of two cases with 20 s of timing each, four benchmark.py runs
of 200 passes). On a CPU, only to see that it runs:

    python benchmarks/gpu_vs_timm_benchmark.py benchmark.py --device cpu --batch-size 2 --img-size 64 \\
        --models vit_tiny_patch16_224 --budget-s 2 --bench-iter 10 --model-kwargs depth=1 img_size=64
"""
from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import HARNESS, environment
from tabulate import tabulate

from harness.results import RESULTS_FILE, read_results

MODELS = 'vit_base_patch16_224,swin_base_patch4_window7_224'
TIMM_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}
MAX_RATIO_OFF = 0.03   # the harness within 3% of benchmark.py
MAX_CV = 0.01          # and steady within a case


def main() -> int:
    args = _parser().parse_args()
    kwargs = dict(_key_value(text) for text in args.model_kwargs)
    print(f'{environment(args.device)}; benchmark.py: {args.benchmark}', flush=True)
    rows, misses = [], []
    with tempfile.TemporaryDirectory(prefix='gpu-vs-timm-') as tmp:
        out = Path(args.out or tmp)
        for precision in args.precisions.split(','):
            harness = _harness_run(args, kwargs, precision, out / precision)
            for model in args.models.split(','):
                timm_ips = _benchmark_py(args, kwargs, precision, model)
                ours = harness[model]
                ratio = ours['images_per_s'] / timm_ips
                rows.append([model, precision, ours['batch_size_used'], f'{ours["images_per_s"]:,.1f}',
                             f'{timm_ips:,.1f}', f'{ratio:.3f}', f'{ours["time_cv"]:.2%}',
                             _figure(ours, 'achieved_tflops', '.3g'), _figure(ours, 'peak_fraction', '.1%'),
                             ours['timing_repeats']])
                misses += [f'{model} {precision}: {why}' for why in _missed(ratio, ours['time_cv'])]
                print(tabulate(rows[-1:], tablefmt='plain', disable_numparse=True), flush=True)
    print()
    print(tabulate(rows, headers=['model', 'precision', 'batch', 'harness img/s', 'benchmark.py img/s', 'ratio',
                                  'harness CV', 'TFLOP/s', 'of peak', 'timed passes'], tablefmt='github',
                   disable_numparse=True))
    print('\n' + ('\n'.join(f'missed: {m}' for m in misses) if misses else
                  f'every case within {MAX_RATIO_OFF:.0%} of benchmark.py with a CV under {MAX_CV:.0%}'))
    return 1 if misses else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('benchmark', type=Path, help="timm's benchmark.py, at the tag of the installed release")
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--models', default=MODELS, help=f'comma-separated (default: {MODELS})')
    parser.add_argument('--precisions', default='amp,cast')
    parser.add_argument('--dtype', default='bf16', choices=sorted(TIMM_DTYPES))
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--budget-s', type=float, default=20.0, help="the harness's timing budget per case")
    parser.add_argument('--warmup', type=int, default=10, help='warm-up passes, both tools')
    parser.add_argument('--bench-iter', type=int, default=200, help="benchmark.py's timed passes")
    parser.add_argument('--out', help='keep the harness runs here (default: a temporary folder)')
    parser.add_argument('--model-kwargs', nargs='*', default=[], metavar='K=V',
                        help='constructor overrides for both tools, as benchmark.py takes them (last option)')
    return parser


def _key_value(text: str) -> tuple[str, object]:
    """``depth=1`` as benchmark.py's ParseKwargs reads it: a Python literal, else the text."""
    key, _, value = text.partition('=')
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def _harness_run(args: argparse.Namespace, kwargs: dict, precision: str, out: Path) -> dict[str, dict]:
    """``harness run`` of every model at the size and batch; each model's record."""
    out.mkdir(parents=True, exist_ok=True)
    matrix = out.parent / f'gpu-vs-timm-{precision}.yaml'
    matrix.write_text(yaml.safe_dump({
        'name': f'gpu-vs-timm-{precision}', 'models': [{'name': m, **kwargs} for m in args.models.split(',')],
        'origins': ['timm'], 'sizes': [args.img_size], 'paths': ['create'],
        'timing': {'batch_size': args.batch_size, 'dtype': args.dtype, 'precision': precision,
                   'warmup': args.warmup, 'budget_s': args.budget_s, 'median_rse': 0.0}}, sort_keys=False))
    command = [*HARNESS, 'run', str(matrix), '--out', str(out), '--device', args.device, '-q']
    done = subprocess.run(command, capture_output=True, text=True)
    records = {r['model']: r for r in read_results(out / RESULTS_FILE)} if (out / RESULTS_FILE).exists() else {}
    untimed = [m for m in args.models.split(',') if not (records.get(m) or {}).get('images_per_s')]
    if done.returncode not in (0, 1) or untimed:
        sys.exit(f'{" ".join(command)} exited {done.returncode}; untimed: {untimed}\n{done.stdout[-3000:]}'
                 f'{done.stderr[-3000:]}')
    return records


def _benchmark_py(args: argparse.Namespace, kwargs: dict, precision: str, model: str) -> float:
    """benchmark.py's inference images/s for ``model``."""
    dtype = TIMM_DTYPES[args.dtype]
    flags = ['--amp', '--amp-dtype', dtype] if precision == 'amp' else ['--precision', dtype]
    command = [sys.executable, str(args.benchmark), '--model', model, '--bench', 'inference', '--device',
               args.device, '--batch-size', str(args.batch_size), '--img-size', str(args.img_size),
               '--num-warm-iter', str(args.warmup), '--num-bench-iter', str(args.bench_iter), '--no-retry', *flags]
    if kwargs:
        command += ['--model-kwargs', *(f'{k}={v!r}' for k, v in kwargs.items())]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or '--result' not in done.stdout:
        sys.exit(f'{" ".join(command)} exited {done.returncode}\n{done.stdout[-3000:]}{done.stderr[-3000:]}')
    result = json.loads(done.stdout.rsplit('--result', 1)[1])
    if 'error' in result:
        sys.exit(f'benchmark.py {model}: {result["error"]}')
    return float(result['infer_samples_per_sec'])


def _missed(ratio: float, cv: float) -> list[str]:
    missed = [f'ratio {ratio:.3f} is beyond 1 ± {MAX_RATIO_OFF}'] if abs(ratio - 1) > MAX_RATIO_OFF else []
    return missed + ([f'CV {cv:.2%} is not under {MAX_CV:.0%}'] if cv >= MAX_CV else [])


def _figure(record: dict, name: str, spec: str) -> str:
    value = record.get(name)
    return '—' if value is None else format(value, spec)


if __name__ == '__main__':
    sys.exit(main())
