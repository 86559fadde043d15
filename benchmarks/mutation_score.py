"""How many plausible timm resize bugs do the shipped matrices catch? A mutation score for the harness.

    python benchmarks/mutation_score.py [--mutants ID,...] [--matrices NAME|PATH,...] [-n 2] [--out DIR]
                                        [--cache DIR] [--check]

Every mutant of ``benchmarks/mutants.py`` is applied to a fresh copy of the installed timm package, and the
matrices are run against that copy with ``harness run MATRIX --timm <copy> --no-timing -n N``. Each case's
status and failed checks are compared with a baseline run of the unmutated copy (run once per invocation): a
mutant is *killed* when any case differs, by the checks that newly failed on that case's path (``fidelity on
dynamic``), or by the new status where no check names it (``error``, ``xpassed``), and *survives* otherwise.

Which cases a mutant runs: in every chosen matrix (default: the five zoo matrices), the models whose timm
entrypoint reaches the mutated function or class in a static call graph of timm's source by names
(``timm_reach.py``; over-inclusive: a shared layer such as ``PatchEmbed`` selects every model), selected with
``-k``. The baseline runs every case of the matrices any chosen mutant needs.

Prints one line per mutant and ``mutation score: K/N``; writes ``<out>/mutation.json`` after every mutant
(default out: ``reports/mutation``). ``--check`` only verifies that every mutant's snippet occurs exactly once in
the installed release (exit 1 naming those that do not).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import timm  # noqa: E402
from mutants import MUTANTS, Mutant, MutantMismatch  # noqa: E402
from timm_reach import CallGraph  # noqa: E402

from harness.cache import default_cache_dir  # noqa: E402
from harness.results import RESULTS_FILE, read_results  # noqa: E402
from harness.spec.matrix import load_matrix  # noqa: E402
from harness.timm_versions import installed_timm  # noqa: E402

DEFAULT_MATRICES = ('zoo', 'zoo-eva', 'zoo-relpos', 'zoo-swin', 'zoo-small')
HARNESS_OK = (0, 1)   # harness run: every case as expected, or some case failed; anything else is a broken run
SHOWN_CASES = 3       # cases named on a mutant's line


@dataclass(frozen=True)
class Outcome:
    """A case's verdict as the comparison sees it."""
    status: str
    failed_checks: tuple[str, ...]


@dataclass
class MatrixRun:
    """One matrix's cases for one mutant (or the baseline): case id -> outcome, path and model label."""
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Difference:
    matrix: str
    case_id: str
    path: str
    baseline: str   # 'passed' or 'failed[fidelity]'
    mutant: str
    killed_by: list[str]


@dataclass
class MutantResult:
    id: str
    area: str
    file: str
    description: str
    matrices: dict[str, list[str]]   # matrix name -> the model labels run
    killed: bool = False
    killed_by: dict[str, int] = field(default_factory=dict)   # 'fidelity on dynamic' -> cases
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0
    broken_runs: list[str] = field(default_factory=list)


class BrokenRun(RuntimeError):
    """``harness run`` exited with neither 0 nor 1: the run itself failed (bad input, an uninstallable tree)."""


def timm_package() -> Path:
    return Path(timm.__file__).resolve().parent


def copy_timm(destination: Path) -> Path:
    """A source tree (``destination`` holding ``timm/``) with a copy of the installed package."""
    shutil.copytree(timm_package(), destination / 'timm', ignore=shutil.ignore_patterns('__pycache__'))
    return destination


def matrix_path(spec: str) -> Path:
    path = Path(spec)
    if path.suffix in ('.yaml', '.yml'):
        return path.resolve()
    named = REPO / 'matrices' / f'{spec}.yaml'
    if not named.is_file():
        raise SystemExit(f'error: --matrices: {spec}: no such file or matrix name (expected a .yaml path or one '
                         f'of {", ".join(p.stem for p in sorted((REPO / "matrices").glob("*.yaml")))})')
    return named


def selected_models(mutant: Mutant, graph: CallGraph, matrices: dict[str, Path]) -> dict[str, list[str]]:
    """Matrix name -> labels of its models whose entrypoint reaches the mutated code (matrices with none left out)."""
    text = (timm_package() / mutant.file).read_text()
    line = text[:text.index(mutant.find)].count('\n') + 1
    reaching = graph.reaching(graph.node_at(mutant.file, line))
    chosen = {}
    for name, path in matrices.items():
        labels = sorted({spec.label for spec in load_matrix(path).models if spec.name in reaching})
        if labels:
            chosen[name] = labels
    return chosen


def run_matrix(tree: Path, matrix: Path, out: Path, args: argparse.Namespace, labels: list[str] | None) -> MatrixRun:
    """``harness run`` of ``matrix`` against the timm source tree ``tree``, only ``labels``' cases if given."""
    command = [sys.executable, '-m', 'harness.cli', 'run', str(matrix), '--timm', str(tree), '--no-timing',
               '-n', str(args.jobs), '--out', str(out), '--cache', str(args.cache), '-q']
    if labels:
        command += ['-k', ' or '.join(labels)]
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(out / 'harness.log', 'w') as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO).returncode
    seconds = time.perf_counter() - started
    if code not in HARNESS_OK:
        raise BrokenRun(f'{" ".join(command)} exited {code}; see {out / "harness.log"}')
    return read_run(out, seconds)


def read_run(out: Path, seconds: float) -> MatrixRun:
    run = MatrixRun(seconds=seconds)
    for record in read_results(out / RESULTS_FILE):
        run.outcomes[record['case_id']] = Outcome(record['status'], tuple(sorted(record.get('failed_checks') or ())))
        run.paths[record['case_id']] = record['path']
        run.models[record['case_id']] = record['model']
    return run


def differences(matrix: str, baseline: MatrixRun, mutant: MatrixRun, labels: list[str]) -> list[Difference]:
    """The cases of ``labels`` whose outcome under the mutant differs from the baseline's (a lost case too)."""
    found = []
    cases = [c for c in baseline.outcomes if baseline.models[c] in labels] + \
            [c for c in mutant.outcomes if c not in baseline.outcomes]
    for case in cases:
        before, after = baseline.outcomes.get(case), mutant.outcomes.get(case)
        if before == after:
            continue
        if after is None:
            killed_by = ['lost (no record)']
        else:
            new_checks = [c for c in after.failed_checks if not before or c not in before.failed_checks]
            path = mutant.paths[case]
            killed_by = [f'{check} on {path}' for check in new_checks] or [f'{after.status} on {path}']
        found.append(Difference(matrix, case, (mutant.paths.get(case) or baseline.paths[case]),
                                _shown(before), _shown(after), killed_by))
    return found


def _shown(outcome: Outcome | None) -> str:
    if outcome is None:
        return 'absent'
    return f'{outcome.status}[{",".join(outcome.failed_checks)}]' if outcome.failed_checks else outcome.status


class Baseline:
    """The unmutated copy's run of each matrix, made on first need and kept for the whole invocation (with
    ``--resume``, an earlier invocation's run of the same matrix file on the same timm release is kept)."""

    def __init__(self, work: Path, out: Path, args: argparse.Namespace, seconds: dict[str, float]):
        self.tree = copy_timm(work / 'baseline')
        self.out, self.args = out, args
        self.runs: dict[str, MatrixRun] = {}
        self.earlier_seconds = seconds   # matrix -> seconds its baseline took in the earlier invocation

    def of(self, name: str, path: Path) -> MatrixRun:
        if name not in self.runs:
            folder = self.out / 'baseline' / name
            if self.args.resume and _same_run(folder, path):
                self.runs[name] = read_run(folder, self.earlier_seconds.get(name, 0.0))
                how = 'kept from the earlier run'
            else:
                self.runs[name] = run_matrix(self.tree, path, folder, self.args, None)
                how = f'{self.runs[name].seconds:.0f} s'
            print(f'baseline {name}: {dict(Counter(o.status for o in self.runs[name].outcomes.values()))} '
                  f'({how})', flush=True)
        return self.runs[name]


def _same_run(folder: Path, matrix: Path) -> bool:
    """Whether ``folder`` holds a finished run of this matrix file's content on the installed timm release."""
    try:
        recorded = json.loads((folder / 'run.json').read_text())
    except (OSError, ValueError):
        return False
    return (recorded.get('timm_version') == timm.__version__ and bool(recorded.get('finished_at'))
            and recorded.get('matrix_sha256') == hashlib.sha256(matrix.read_bytes()).hexdigest())


def score_mutant(mutant: Mutant, chosen: dict[str, list[str]], matrices: dict[str, Path], baseline: Baseline,
                 work: Path, args: argparse.Namespace) -> MutantResult:
    result = MutantResult(mutant.id, mutant.area, mutant.file, mutant.description, chosen)
    for name in chosen:
        baseline.of(name, matrices[name])
    started = time.perf_counter()
    tree = copy_timm(work / mutant.id)
    mutant.apply(tree / 'timm')
    installed, _ = installed_timm(str(tree), args.cache)
    try:
        for name, labels in chosen.items():
            try:
                run = run_matrix(tree, matrices[name], args.out / mutant.id / name, args, labels)
            except BrokenRun as broken:
                result.broken_runs.append(str(broken))
                continue
            result.differences += differences(name, baseline.runs[name], run, labels)
    finally:
        shutil.rmtree(installed, ignore_errors=True)   # the mutated install in the cache: never reused
        shutil.rmtree(tree, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    result.killed_by = dict(Counter(k for d in result.differences for k in d.killed_by).most_common())
    result.killed = bool(result.differences)
    return result


def line(result: MutantResult) -> str:
    head = f'{"KILLED  " if result.killed else "SURVIVED"} {result.id} [{result.area}] ({result.seconds:.0f} s)'
    if result.broken_runs:
        head += f' BROKEN RUN: {result.broken_runs[0]}'
    if not result.killed:
        return f'{head}: {result.description}; ran {_ran(result)}'
    checks = ', '.join(f'{check} ({n})' for check, n in result.killed_by.items())
    cases = ', '.join(f'{d.case_id} ({d.matrix})' for d in result.differences[:SHOWN_CASES])
    more = f' and {len(result.differences) - SHOWN_CASES} more' if len(result.differences) > SHOWN_CASES else ''
    return f'{head}: {checks}; e.g. {cases}{more}'


def _ran(result: MutantResult) -> str:
    return '; '.join(f'{m}: {", ".join(labels)}' for m, labels in result.matrices.items()) or 'no matrix'


def check_snippets(mutants: list[Mutant]) -> list[str]:
    problems = []
    for mutant in mutants:
        count = (timm_package() / mutant.file).read_text().count(mutant.find)
        if count != 1:
            problems.append(f'mutant {mutant.id}: its find snippet occurs {count} times in timm/{mutant.file} '
                            f'(expected exactly once)')
    return problems


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--mutants', help='comma-separated mutant ids (default: all)')
    parser.add_argument('--matrices', default=','.join(DEFAULT_MATRICES),
                        help='comma-separated matrix names (matrices/NAME.yaml) or paths')
    parser.add_argument('-n', '--jobs', default='2', help='harness run -n (workers per run)')
    parser.add_argument('--out', type=Path, default=REPO / 'reports' / 'mutation',
                        help='where mutation.json, the baseline and each mutant run go (default: reports/mutation)')
    parser.add_argument('--cache', type=Path, default=default_cache_dir(), help="the harness's cache")
    parser.add_argument('--check', action='store_true', help='only check that every snippet matches')
    parser.add_argument('--resume', action='store_true',
                        help='keep the mutants and baselines <out> already holds for this timm release')
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    return args


def chosen_mutants(ids: str | None) -> list[Mutant]:
    if not ids:
        return list(MUTANTS)
    known = {m.id: m for m in MUTANTS}
    unknown = [i for i in ids.split(',') if i not in known]
    if unknown:
        raise SystemExit(f'error: --mutants: unknown id(s) {", ".join(unknown)} (expected ids from '
                         f'benchmarks/mutants.py)')
    return [known[i] for i in ids.split(',')]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mutants = chosen_mutants(args.mutants)
    problems = check_snippets(mutants)
    if problems:
        print('\n'.join(problems), file=sys.stderr)
        print(f'{len(problems)} mutant(s) do not match timm {timm.__version__}: rewrite them', file=sys.stderr)
        return 1
    if args.check:
        print(f'{len(mutants)} mutants match timm {timm.__version__}')
        return 0
    matrices = {matrix_path(spec).stem: matrix_path(spec) for spec in args.matrices.split(',')}
    graph = CallGraph(timm_package())
    started, load_before = time.perf_counter(), os.getloadavg()
    earlier = _earlier(args, matrices)
    report = {'timm': timm.__version__, 'harness_commit': _commit(), 'matrices': {k: str(v) for k, v in
              matrices.items()}, 'jobs': args.jobs, 'load_average_start': load_before,
              'earlier_seconds': earlier.get('seconds', 0.0),
              'mutants': [m for m in earlier.get('mutants', []) if m['id'] in {m.id for m in mutants}]}
    done = {m['id'] for m in report['mutants']}
    for kept in report['mutants']:
        print(f'{line(MutantResult(**{**kept, "differences": [Difference(**d) for d in kept["differences"]]}))}'
              f' (kept from the earlier run)', flush=True)
    print(f'{len(mutants) - len(done)} mutants of timm {timm.__version__} to run; matrices {", ".join(matrices)}; '
          f'-n {args.jobs}; load average {load_before[0]:.1f} on {os.cpu_count()} CPUs', flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='mutation-') as work:
        baseline = Baseline(Path(work), args.out, args, earlier.get('baseline_matrix_seconds', {}))
        for mutant in (m for m in mutants if m.id not in done):
            chosen = selected_models(mutant, graph, matrices)
            result = score_mutant(mutant, chosen, matrices, baseline, Path(work), args)
            print(line(result), flush=True)
            report['mutants'].append(asdict(result))
            _write(report, baseline, started, args.out)
        _write(report, baseline, started, args.out)
    killed = sum(m['killed'] for m in report['mutants'])
    print(f'mutation score: {killed}/{len(mutants)}')
    print(f'wall time {report["seconds"]:.0f} s (baseline {report["baseline_seconds"]:.0f} s); load average '
          f'{load_before[0]:.1f} at start, {report["load_average_end"][0]:.1f} at end; {args.out / "mutation.json"}')
    return 0


def _earlier(args: argparse.Namespace, matrices: dict[str, Path]) -> dict:
    """With --resume, what <out>/mutation.json holds from an earlier invocation on this release and matrices."""
    path = args.out / 'mutation.json'
    if not args.resume or not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get('timm') != timm.__version__ or earlier.get('matrices') != {k: str(v) for k, v in
                                                                             matrices.items()}:
        raise SystemExit(f'error: --resume: {path} was written for timm {earlier.get("timm")} and matrices '
                         f'{", ".join(earlier.get("matrices", {}))}: use another --out or run without --resume')
    return earlier


def _write(report: dict, baseline: Baseline, started: float, out: Path) -> None:
    report.update(score=f'{sum(m["killed"] for m in report["mutants"])}/{len(report["mutants"])}',
                  seconds=report['earlier_seconds'] + time.perf_counter() - started,
                  load_average_end=os.getloadavg(),
                  baseline_matrix_seconds={name: run.seconds for name, run in baseline.runs.items()},
                  baseline_seconds=sum(r.seconds for r in baseline.runs.values()),
                  baseline={name: {c: asdict(o) for c, o in run.outcomes.items()} for name, run in
                            baseline.runs.items()})
    (out / 'mutation.json').write_text(json.dumps(report, indent=1) + '\n')


def _commit() -> str:
    done = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, cwd=REPO)
    return done.stdout.strip() or 'unknown'


if __name__ == '__main__':
    try:
        sys.exit(main())
    except MutantMismatch as mismatch:
        sys.exit(f'error: {mismatch}')
