"""The options `harness run` and the pytest plugin both take, declared once (:data:`RUN_OPTIONS`): one entry
gives each its name, type and bounds, default and help, and :func:`add_run_options` registers the table on
either surface, as pytest-benchmark's ``add_*_options(addoption, prefix)`` does: ``--batch-size`` on the
command line, ``--harness-batch-size`` in the plugin. A bad value is refused on both with ``expected <...>, got
<text>`` (argparse types; pytest's ``addoption`` takes the same).

Imports neither torch nor timm: the pytest plugin uses it in the xdist controller.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness.spec.model import Selection, parse_shard
from harness.store.case_result import DTYPES, PRECISIONS

PLUGIN_PREFIX = 'harness-'   # the plugin's options are --harness-<name>


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected an int >= 1, got {text!r}')
    return value


def bounded_float(accepts: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a float that ``accepts`` takes (nan never does), else ``expected <...>, got <text>``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if math.isnan(value) or not accepts(value):
            raise argparse.ArgumentTypeError(f'expected {expected}, got {text!r}')
        return value
    return parse


case_timeout_s = bounded_float(lambda v: v >= 0, 'seconds >= 0 (0 = no limit)')
max_cv = bounded_float(lambda v: v > 0, 'a fraction > 0')


def shard(text: str) -> str:
    """An argparse type: ``K/N`` checked by :func:`parse_shard`, kept as text (run.json records it so)."""
    try:
        parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


@dataclass(frozen=True)
class RunOption:
    """One option of a run. ``flag`` is ``True`` for an on/off switch (store_true); ``default`` None means "not
    set": the matrix's value (or the harness's) applies. ``plugin_default``: where the plugin's default must
    differ, and :attr:`why_plugin_default` says why."""
    name: str                               # the dest; --name-with-dashes
    help: str
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = False
    default: Any = None
    metavar: str | None = None
    plugin_default: Any = None
    why_plugin_default: str = ''

    def option(self, prefix: str = '') -> str:
        return f'--{prefix}{self.name.replace("_", "-")}'

    def keywords(self, prefix: str = '') -> dict[str, Any]:
        """``add_argument`` / ``addoption`` keywords for the surface that names options with ``prefix``."""
        default = self.plugin_default if prefix == PLUGIN_PREFIX and self.why_plugin_default else self.default
        if self.flag:
            return {'action': 'store_true', 'default': default, 'help': self.help}
        given = {'type': self.type, 'choices': self.choices, 'metavar': self.metavar}
        return {'default': default, 'help': self.help, **{k: v for k, v in given.items() if v is not None}}


# what the matrix's timing: says unless set here (TimingConfig.for_run's keywords)
TIMING_OPTIONS = ('batch_size', 'dtype', 'precision', 'compile', 'channels_last', 'max_cv', 'threads')

RUN_OPTIONS = (
    RunOption('device', 'default: cuda when available, else cpu; cuda without a GPU is an error',
              choices=('cpu', 'cuda')),
    RunOption('cache', 'cache for synthesized checkpoints and timm releases (default: ~/.cache/timm-harness)',
              type=Path, metavar='DIR'),
    RunOption('resume', 'continue the run recorded in the output folder: skip cases that already have a result '
                        '(errors are retried); refused when its run.json differs from this run', flag=True,
              default=False),
    RunOption('batch_size', "timing batch size, an int >= 1 (default: the matrix's, else 1 on CPU and 8 on CUDA)",
              type=positive_int, metavar='N'),
    RunOption('dtype', "timing dtype (default: the matrix's, else fp32)", choices=DTYPES),
    RunOption('precision', "how bf16/fp16 are applied: amp = autocast (timm benchmark.py --amp --amp-dtype), cast = "
                           "weights and inputs in the dtype (benchmark.py --precision) (default: the matrix's, else "
                           "amp)", choices=PRECISIONS),
    RunOption('compile', 'time the model through torch.compile (default mode); compiling is not timed', flag=True),
    RunOption('channels_last', 'time with model and inputs in channels-last memory format', flag=True),
    RunOption('max_cv', "a case whose timed passes vary more than this (std / mean) is recorded as not stable "
                        "(timing_stable: false) (default: the matrix's, else 0.05)", type=max_cv, metavar='FRACTION'),
    RunOption('threads', "torch's intra-op threads per worker (default: the matrix's timing.threads, else 1 on CPU "
                         "for timing stability, torch's default on CUDA; run.json records it as cpu_threads)",
              type=positive_int, metavar='N'),
    RunOption('no_timing', 'run the checks only', flag=True, default=False),
    RunOption('images', "labelled images, DIR/<class>/<image> with each class folder named by its index (207) or "
                        "ImageNet synset (n01440764): records top-1 accuracy at the native and the target size for "
                        "cases with real weights, hub or file (default: the matrix's images:)",
              type=Path, metavar='DIR'),
    RunOption('shard', "only the K-th of N shards of the cases (1-based, deterministic; a checkpoint's cases stay in "
                       "one shard; a zoo entry's architectures are dealt before any is built), for splitting a "
                       "matrix over CI jobs; harness merge joins the results",
              type=shard, metavar='K/N'),
    RunOption('case_timeout', 'record a case still running after this long as error (timeout:) and go on with a '
                              'fresh worker, also when it is stuck in a native call holding the GIL (ended 2 s later) '
                              'or its worker was stopped (killed 4 s later) (default: %(default)s; 0 = no limit)',
              type=case_timeout_s, default=900, metavar='SECONDS', plugin_default=0,
              why_plugin_default='without xdist (plain pytest) a timeout ends the one pytest process, which no '
                                 'worker replaces: the plugin times cases out only when asked'),
    RunOption('full_size', "zoo architectures (--zoo, or a matrix's {zoo: GLOB}) at their real configuration "
                           'instead of in miniature: for a GPU runner', flag=True, default=False),
)


def add_run_options(addoption: Callable[..., Any], prefix: str = '') -> None:
    """Register :data:`RUN_OPTIONS` through ``addoption`` (argparse's ``add_argument``, pytest's ``addoption``),
    each as ``--<prefix><name>``."""
    for entry in RUN_OPTIONS:
        addoption(entry.option(prefix), **entry.keywords(prefix))


def selection(getoption: Callable[[str], Any]) -> Selection:
    """The part of the matrix file a run takes, from the plugin's options (``config.getoption``):
    --harness-shard and --harness-full-size."""
    return Selection.of_run(getoption(f'--{PLUGIN_PREFIX}shard') or '', bool(getoption(f'--{PLUGIN_PREFIX}full-size')))


def plugin_arguments(values: dict[str, Any]) -> list[str]:
    """The plugin's options (``--harness-<name> [value]``) for the run options in ``values`` (by name) that are
    set: a switch that is on, a value that is not None."""
    arguments: list[str] = []
    for entry in RUN_OPTIONS:
        value = values.get(entry.name)
        if value is True:
            arguments.append(entry.option(PLUGIN_PREFIX))
        elif value is not None and value is not False:
            arguments += [entry.option(PLUGIN_PREFIX), str(value)]
    return arguments
