"""harness.results.load, records and run.json of older harnesses under today's names, and which timing settings
two runs must share to be compared."""
from __future__ import annotations

import json

import pandas as pd

import harness.results
from harness.analysis.compare import CompareSpec, timing_change
from harness.results import RESULTS_FILE, append_result
from harness.store import schema
from harness.store.case_result import CaseResult
from harness.store.run_record import read_run_record

OLD_RECORD = {'case_id': 'vit-timm-224x224-create', 'matrix': 'm', 'model': 'vit', 'origin': 'timm',
              'img_size': [224, 224], 'patch_size': 16, 'window_size': None, 'path': 'create', 'status': 'passed',
              'batch_size': 8, 'timing_precision': 0.02, 'time_samples_ms': [10.0] * 7, 'images_per_s': 800.0}


def test_load_gives_one_row_per_case_with_every_field(tmp_path):
    append_result(tmp_path, CaseResult(case_id='b', matrix='m', model='vit', origin='timm', img_size=[64, 64],
                                       patch_size=8, window_size=None, path='dynamic', status='failed',
                                       flops_per_image=123))
    (tmp_path / RESULTS_FILE).open('a').write(json.dumps(OLD_RECORD) + '\n')
    frame = harness.results.load(tmp_path / RESULTS_FILE)
    assert isinstance(frame, pd.DataFrame) and list(frame['case_id']) == ['b', 'vit-timm-224x224-create']
    assert list(frame.columns[:3]) == ['case_id', 'matrix', 'model'] and 'timing_precision' not in frame
    old = frame.set_index('case_id').loc['vit-timm-224x224-create']
    assert old['timing_median_rse'] == 0.02 and pd.isna(old['flops_per_image'])
    # timed before the settings were recorded: autocast, eager, contiguous, the batch it was configured with
    assert (old['precision'], old['compile'], old['channels_last'], old['batch_size_used']) == ('amp', False, False, 8)
    assert str(frame['flops_per_image'].dtype) == 'Int64' and frame['flops_per_image'][0] == 123


def test_old_run_json_reads_under_todays_names(tmp_path):
    (tmp_path / 'run.json').write_text(json.dumps({'results_schema': 2, 'dtype': 'bf16', 'timing_precision': 0.02}))
    run = read_run_record(tmp_path)
    assert (run.timing_median_rse, run.precision, run.compile, run.channels_last) == (0.02, 'amp', False, False)


def test_timings_are_compared_only_when_timed_alike():
    spec = CompareSpec()
    old = schema.upgrade(schema.RECORD, OLD_RECORD)   # as compare reads it
    now = {**OLD_RECORD, 'precision': 'amp', 'compile': False, 'channels_last': False, 'batch_size_used': 8}
    assert timing_change(old, now, spec)[0] == 'same'   # older records: autocast, eager, unhalved batch
    for setting, value in (('precision', 'cast'), ('compile', True), ('channels_last', True),
                           ('batch_size_used', 4)):
        change, _, _, why = timing_change(old, {**now, setting: value}, spec)
        assert change == 'not_comparable' and why.startswith(f'timed differently: {setting} ')
