"""How torch's intra-op thread count changes CPU timings on this machine: the figures behind `harness run`'s CPU
default of one thread per worker (README: Timing).

Times a randomly initialized ViT (no weights needed) for ``--passes`` forward passes at each thread count,
alternating thread counts pass by pass so that a machine whose load changes during the script affects each
alike, and prints each count's median, CV and the 1-minute load average before and after.

    python benchmarks/threads.py [--model vit_small_patch16_224] [--passes 30] [--threads 1,2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import timm
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='vit_small_patch16_224')
    parser.add_argument('--passes', type=int, default=30)
    parser.add_argument('--threads', default=','.join(map(str, range(1, len(os.sched_getaffinity(0)) + 1))))
    args = parser.parse_args()
    counts = [int(t) for t in args.threads.split(',')]
    model = timm.create_model(args.model, pretrained=False).eval()
    inputs = torch.randn(1, 3, 224, 224)
    samples: dict[int, list[float]] = {t: [] for t in counts}
    load_before = os.getloadavg()[0]
    with torch.inference_mode():
        for t in counts:   # warm-up at every count
            torch.set_num_threads(t)
            model(inputs)
        for _ in range(args.passes):
            for t in counts:
                torch.set_num_threads(t)
                started = time.perf_counter()
                model(inputs)
                samples[t].append((time.perf_counter() - started) * 1000)
    load_after = os.getloadavg()[0]
    cores = len(os.sched_getaffinity(0))
    print(f'{args.model}, batch 1, 224x224, {args.passes} passes per thread count, {cores} cores, 1-minute load '
          f'average {load_before:.1f} before, {load_after:.1f} after')
    for t, ms in samples.items():
        print(f'{t} thread{"s" if t > 1 else ""}: median {statistics.median(ms):.1f} ms, '
              f'CV {statistics.stdev(ms) / statistics.fmean(ms):.0%}, min {min(ms):.1f} ms, max {max(ms):.1f} ms')


if __name__ == '__main__':
    main()
