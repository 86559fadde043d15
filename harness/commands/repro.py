"""``harness repro RUN_DIR CASE_ID``: a failed case as a standalone script for an upstream bug report."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from harness.commands.common import EXIT_OK, UsageError

DESCRIPTION = """\
Write a failed (or xfailed) case of a run as one Python script that needs nothing but torch and timm, for a
bug report upstream. The script builds the case's source checkpoint (synthesized: seeded, smooth where
resizing matters; or the user's file), writes it in the origin's layout, builds the case's path as the harness
did, and runs the checks that failed with the harness's oracles inlined, printing what each expected and got.
Its header says which timm releases failed and passed the case (run.json, compare.json and bisect.json in
RUN_DIR or the folder above) and how it was made.

The script exits 1 when the failure reproduces (naming the check, also when another check fails), 0 when the
case passes, 125 when the case cannot be built or tested on that timm release: git bisect run's codes.

example:
  harness repro reports/vit-0.9.16 vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create
  python repro_vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create.py
  PYTHONPATH=~/.cache/timm-harness/timm/1.0.3 python repro_vit_base_patch16_clip_224-to-patch8-open_clip-224x224-patch8-create.py

exit codes: 0 written; 2 bad input (no such run or case, or a case that did not fail)
"""


def add_parser(commands) -> None:
    repro = commands.add_parser('repro', help='write a failed case as a standalone script for a bug report upstream',
                                description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    repro.set_defaults(handler=main)
    repro.add_argument('run_dir', type=Path, metavar='RUN_DIR', help='a run folder, or its results.jsonl')
    repro.add_argument('case_id', metavar='CASE_ID', help="the case's id, as results.jsonl and the report name it")
    repro.add_argument('--out', type=Path, metavar='FILE', help='where to write the script (default: '
                                                                'repro_<case id>.py in the current folder)')


def main(args: argparse.Namespace, extra: list[str], argv: list[str]) -> int:
    from harness.repro.sources import ReproError, find_case
    try:
        found = find_case(args.run_dir, args.case_id, args.recorded_matrix)
    except ReproError as e:
        raise UsageError(str(e)) from None
    from harness.repro.script import render_script
    try:
        script = render_script(found, shlex.join(['harness', *argv]))
    except ReproError as e:
        raise UsageError(str(e)) from None
    out = args.out or Path(f'repro_{args.case_id}.py')
    try:
        out.write_text(script)
    except OSError as e:
        raise UsageError(f'--out: cannot write {out} ({e.strerror}); expected a writable file path') from None
    print(f'repro: {out} ({len(script.splitlines())} lines); run it with: python {shlex.quote(str(out))}')
    return EXIT_OK
