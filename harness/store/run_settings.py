"""The settings a run is measured with, each defined once: what run.json and the case records call it, how reports
and messages name it, whether a resumed run or a merged shard must share it, whether timings taken under
different values can be compared.

run.json holds the run's settings; the measurement settings (:data:`MEASUREMENT`) are also in every case record,
because records travel without their run.json: ``harness merge`` joins shards that may have run on different
runners (another ``device_name``), and ``harness ab``'s records alternate two releases in one folder (another
``timm_version`` per record), so each number keeps how it was measured. Readers take the names and words from
here: :data:`harness.store.run_record.MUST_MATCH`, the report's "How this was measured", the HTML report's environment
table, ``harness compare``'s "timed differently". What a record of an older harness was measured with, where it
lacks a setting, is one of :mod:`harness.store.schema`'s upgrade steps.

Imports nothing: the command line reads it before torch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str                  # the field, in run.json (and in every case record, for a measurement setting)
    label: str                 # how messages name it: `<label> was <old>, now <new>`
    meaning: str = ''          # how the report's "How this was measured" names it, where the label is not enough
    must_match: bool = False   # a resumed run and the shards of a merge must share it
    timing: bool = False       # two timings taken under different values are not compared (harness compare)
    in_record: bool = True     # also in every case record: how that case was measured

    @property
    def described(self) -> str:
        return self.meaning or self.label


SETTINGS = (
    Setting('timm_version', 'timm', must_match=True),
    Setting('torch_version', 'torch', must_match=True, timing=True),
    Setting('device', 'device', must_match=True),
    Setting('device_name', 'device name', timing=True),
    Setting('dtype', 'dtype', must_match=True, timing=True),
    Setting('precision', 'precision', 'precision (amp: autocast; cast: weights and inputs in the dtype)',
            must_match=True, timing=True),
    Setting('compile', 'compile', 'torch.compile', must_match=True, timing=True),
    Setting('channels_last', 'channels-last', must_match=True, timing=True),
    Setting('batch_size', 'batch size', must_match=True, timing=True),
    Setting('timing_budget_s', 'timing budget', 'timing budget (s per case)'),
    Setting('timing_median_rse', 'timing median RSE',
            "timing median RSE (the median's relative standard error that ends timing; 0: none)"),
    Setting('timing_max_cv', 'timing max CV', 'timing stable when CV (std / mean of the timed passes) is at most'),
    # the run's alone: what makes two runs' cases different work, never in a record
    Setting('cpu_threads', 'threads (--threads)', must_match=True, in_record=False),
    Setting('matrix_sha256', 'matrix content (sha256)', must_match=True, in_record=False),
    Setting('full_size', 'zoo models at full size (--full-size)', must_match=True, in_record=False),
    Setting('images_sha256', 'labelled images (sha256 of their paths and sizes)', must_match=True, in_record=False),
)
MEASUREMENT = tuple(setting for setting in SETTINGS if setting.in_record)   # in run.json and every case record
