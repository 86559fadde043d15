"""One release's side of ``harness ab``: a process that builds a case's model and times rounds on request.

``harness ab`` (:mod:`harness.analysis.ab`) starts one worker per timm release and alternates timing rounds between
them, so that a machine whose speed drifts during the job slows both releases alike. The protocol is JSON
lines: the driver writes ``{"case": <case id>, "round": <n>}``; the worker answers ``{"case": ..., "round":
..., "samples_ms": [...], "batch_size_used": <n>, "flops_per_image": <n>}`` or ``{"case": ..., "error":
"..."}``. It keeps the latest case's model between rounds (and its FLOPs, counted once). stdout carries the
protocol alone: what timm or torch print goes to stderr.

    python -m harness.timing.worker '<JSON settings written by harness.analysis.ab>'
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TextIO

import torch

from harness.build import build_path
from harness.case.work import CheckpointWork, RunOptions
from harness.spec.cases import Case, expand
from harness.spec.matrix import Selection, load_matrix
from harness.timing.config import TimingConfig
from harness.timing.flops import flops_per_image
from harness.timing.forward import time_forward, use_threads
from harness.timm_versions import check_imported_release


def main() -> None:
    protocol = _protocol_channel()
    problem = check_imported_release()
    if problem:
        sys.exit(problem)
    settings = json.loads(sys.argv[1])
    matrix = load_matrix(settings['matrix'], selection=Selection.of_run(settings['shard'], settings['full_size']))
    cases = {case.case_id: case for case in expand(matrix)}
    device = torch.device(settings['device'])
    options = RunOptions(device=device, cache_dir=Path(settings['cache']), out_dir=Path(settings['out']),
                         timing=TimingConfig(**settings['round_timing']))
    use_threads(options.timing.for_device(device.type))
    work = CheckpointWork(matrix, options)
    current: tuple[str, torch.nn.Module, int] | None = None   # case id, its model, its FLOPs per image
    for line in sys.stdin:
        request = json.loads(line)
        case_id = request['case']
        try:
            img_size = cases[case_id].img_size
            if current is None or current[0] != case_id:
                current = None   # the previous case's model goes before the next one is built
                model = _built(cases[case_id], work, device)
                current = (case_id, model, flops_per_image(model, img_size, device))
            with work.parked_while_timing(current[1]):
                timing = time_forward(current[1], img_size, options.timing, device)
            reply = {'case': case_id, 'round': request['round'], 'samples_ms': list(timing.samples_ms),
                     'batch_size_used': timing.batch_size_used, 'flops_per_image': current[2]}
        except Exception as e:   # noqa: BLE001 - the driver records the case untimed on this side, and goes on
            current = None
            reply = {'case': case_id, 'error': f'{type(e).__name__}: {e}'}
        protocol.write(json.dumps(reply) + '\n')
        protocol.flush()


def _built(case: Case, work: CheckpointWork, device: torch.device) -> torch.nn.Module:
    native = work.native(case)
    built = build_path(case.path, native.checkpoint, case.family, native.geometry, case.target, native.built)
    return built.model.to(device).eval()


def _protocol_channel() -> TextIO:
    """The original stdout, for the protocol alone; fd 1 (and sys.stdout) now lead to stderr."""
    channel = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


if __name__ == '__main__':
    main()
