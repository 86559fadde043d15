"""How forward passes are timed: the settings a matrix's ``timing:`` block, the command line and the timing worker
share, and what an unset one becomes on each device type. No torch here: the matrix validator reads it too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# what a timing setting left unset in the matrix and on the command line becomes, per device type
# CPU time is scarce (a ViT-B pass at 384 takes about a second on 2 cores): timing stops once the median is known
# to 2%, and the budget is a cap that leaves room for the floor of timed passes. GPU passes take milliseconds:
# the budget is filled, and the many samples make comparisons between releases sharper.
# threads: torch's intra-op threads in each worker. One on CPU: a pass on 2 threads of a shared 2-core machine
# waits for whichever core is busy (benchmarks/threads.py; README: Timing); on CUDA torch's own default
DEVICE_TIMING_DEFAULTS = {'cpu': {'batch_size': 1, 'budget_s': 10.0, 'median_rse': 0.02, 'threads': 1},
                          'cuda': {'batch_size': 8, 'budget_s': 5.0, 'median_rse': 0.0}}


@dataclass(frozen=True)
class TimingConfig:
    """How forward passes are timed. ``None`` means the device's default (:data:`DEVICE_TIMING_DEFAULTS`):
    a CPU pass is orders of magnitude slower than a GPU one, so it gets a smaller batch.

    A case gets ``budget_s`` seconds for its warm-up and timed passes together: timed passes go on while
    another one fits, so a fast model gets many samples and a slow one is not timed for minutes, and stop
    earlier once the median's relative standard error is at most ``median_rse`` (0: fill the budget). The
    ``min_repeats`` floor wins over both. ``precision`` says how a reduced ``dtype`` is applied: ``amp``
    (autocast) or ``cast`` (weights and inputs converted, as timm's benchmark.py ``--precision``)."""
    enabled: bool = True
    batch_size: int | None = None
    dtype: str = 'fp32'
    precision: str = 'amp'
    compile: bool = False           # torch.compile, default mode; compiling is not timed
    channels_last: bool = False     # model and inputs in channels-last memory format
    warmup: int = 1
    budget_s: float | None = None   # seconds per case: warm-up and timed passes together
    min_repeats: int = 7            # fewer timed passes cannot reach p < 0.002 in a rank test (7 vs 7: 0.0006)
    median_rse: float | None = None # relative standard error of the median that ends timing early; 0: never
    max_cv: float = 0.05            # a case whose passes vary more (std / mean) is recorded as not stable
    threads: int | None = None      # torch.set_num_threads in each worker; None on CUDA: torch's default

    def for_run(self, device_type: str, enabled: bool = True, **overrides: Any) -> 'TimingConfig':
        """What a run times with: the command line's settings (``batch_size=``, ``dtype=``, ...; None keeps the
        matrix's) over the matrix's, then every value still unset filled in for ``device_type``."""
        chosen = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **chosen, enabled=self.enabled and enabled).for_device(device_type)

    def for_device(self, device_type: str) -> 'TimingConfig':
        """This configuration with every unset value filled in for ``device_type``."""
        defaults = DEVICE_TIMING_DEFAULTS.get(device_type, DEVICE_TIMING_DEFAULTS['cpu'])
        return dataclasses.replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
