"""Every JSON file the harness writes carries a schema version (harness.store.schema), and files of older harnesses read
through its upgrade steps: a run folder of the current release (records without a version, run.json at
results_schema 2) still loads and resumes."""
import json
import shutil
from pathlib import Path

import pytest
import timm
import torch

from harness.analysis.bisect import BisectResult, to_json
from harness.analysis.compare import CompareSpec, Side
from harness.analysis.compare_report import to_json as compare_json
from harness.analysis.coverage import render
from harness.analysis.findings import FindingsReport
from harness.checkpoints.integrity import CHECKSUMS_FILE, checksum_problem, sha256_of, write_checksums
from harness.noise_floors import FLOORS_FILE
from harness.results import RESULTS_FILE, ResultsFileError, load, read_results
from harness.runtime.device_lock import Holder, read_holder, write_holder
from harness.store import schema
from harness.store.case_result import CaseResult
from harness.store.run_record import RunRecord, RunRecordError, check_finished, read_run_record, write_run_record
from tests.test_cli import harness, records

CURRENT_RELEASE = Path(__file__).parent / 'fixtures' / 'current_release'   # written by the harness of ba06dc5


def test_an_older_run_json_is_upgraded_step_by_step():
    """Schema 1 recorded no end time (it passes as finished); a run.json of schema 1 or 2 may carry the field
    issue 9 renamed."""
    one = schema.upgrade(schema.RUN, {'dtype': 'bf16', 'timing_precision': 0.02})
    assert one == {'dtype': 'bf16', 'timing_median_rse': 0.02, 'finished_at': schema.UNRECORDED,
                   'results_schema': schema.RUN.version}
    two = schema.upgrade(schema.RUN, {'results_schema': 2, 'finished_at': '', 'timing_precision': 0.02})
    assert two == {'finished_at': '', 'timing_median_rse': 0.02, 'results_schema': schema.RUN.version}


def test_a_file_of_a_newer_harness_reads_as_it_is_and_a_version_must_be_one():
    newer = {'schema': schema.RECORD.version + 1, 'timing_precision': 1}
    assert schema.upgrade(schema.RECORD, newer) == newer
    with pytest.raises(schema.SchemaError, match=r'^schema: expected a results.jsonl record schema version, an int '
                                                 r'>= 1, got "2"$'):
        schema.upgrade(schema.RECORD, {'schema': '2'})


def test_every_writer_stamps_the_current_version(tmp_path):
    assert json.loads(CaseResult('c', 'm', 'vit', 'timm', [8, 8], 8, None, 'create').to_json())['schema'] == \
        schema.RECORD.version
    write_run_record(tmp_path, RunRecord())   # a record built without a version is of the first layout
    assert json.loads((tmp_path / 'run.json').read_text())['results_schema'] == schema.RUN.version
    assert json.loads(FindingsReport('run', 'run', 0).to_json())['schema'] == schema.FINDINGS.version
    assert to_json(BisectResult('1.0.3', '1.0.9', {'c': 'passed'}, {'c': 'failed'}))['schema'] == schema.BISECT.version
    write_holder(tmp_path / 'holder', Holder(1, 'harness run'), tmp_path)
    assert json.loads((tmp_path / 'holder').read_text())['schema'] == schema.HOLDER.version
    assert read_holder(tmp_path / 'holder').pid == 1
    (tmp_path / 'entry').mkdir()
    (tmp_path / 'entry' / 'a.bin').write_bytes(b'a')
    write_checksums(tmp_path / 'entry')
    assert json.loads((tmp_path / 'entry' / CHECKSUMS_FILE).read_text())['schema'] == schema.CHECKSUMS.version
    side = Side('base', RunRecord(), {})
    assert compare_json(side, side, CompareSpec(), [])['schema'] == schema.COMPARE.version
    assert json.loads(render([], 'json'))['schema'] == schema.COVERAGE.version
    noise_floors = json.loads(FLOORS_FILE.read_text())
    assert noise_floors['schema'] == schema.NOISE_FLOORS.version


def test_a_checkpoint_entry_of_the_current_release_is_still_sound(tmp_path):
    """sha256.json was a bare {file: sha256} map: an entry synthesized before is checked, not made again."""
    (tmp_path / 'a.bin').write_bytes(b'a')
    (tmp_path / CHECKSUMS_FILE).write_text(json.dumps({'a.bin': sha256_of(tmp_path / 'a.bin')}))
    assert checksum_problem(tmp_path) is None
    (tmp_path / 'a.bin').write_bytes(b'b')
    assert 'a.bin' in checksum_problem(tmp_path)


def test_a_record_with_a_wrong_version_names_its_line(tmp_path):
    results = tmp_path / RESULTS_FILE
    line = (CURRENT_RELEASE / 'out' / RESULTS_FILE).read_text().strip()
    results.write_text(json.dumps({**json.loads(line), 'schema': 0}) + '\n' + line + '\n')
    with pytest.raises(ResultsFileError, match=rf'^{results}:1: schema: expected .*, an int >= 1, got 0$'):
        read_results(results)
    (tmp_path / 'run.json').write_text(json.dumps({'results_schema': None}))
    with pytest.raises(RunRecordError, match=r'run.json: results_schema: expected .* got null$'):
        read_run_record(tmp_path)


@pytest.fixture
def current_release_run(tmp_path) -> Path:
    """The fixture folder, with the settings --resume compares set to this machine's (timm, torch): the layout
    is the current release's, the values are those this run would record."""
    folder = tmp_path / 'run'
    shutil.copytree(CURRENT_RELEASE, folder)
    run = json.loads((folder / 'out' / 'run.json').read_text())
    (folder / 'out' / 'run.json').write_text(json.dumps({**run, 'timm_version': timm.__version__,
                                                         'torch_version': torch.__version__}, indent=2))
    return folder


def test_a_run_of_the_current_release_loads(current_release_run):
    out = current_release_run / 'out'
    assert 'schema' not in records(out)[0] and json.loads((out / 'run.json').read_text())['results_schema'] == 2
    frame = load(out / RESULTS_FILE)
    assert list(frame['status']) == ['passed'] and list(frame['schema']) == [schema.RECORD.version]
    run = read_run_record(out)
    assert run.results_schema == schema.RUN.version and run.matrix_name == 'current_release'
    check_finished(out, run)


def test_a_run_of_the_current_release_resumes(current_release_run, cache_dir):
    out = current_release_run / 'out'
    resumed = harness('run', 'matrix.yaml', '--out', 'out', '--cache', cache_dir, '--no-timing', '--resume',
                      cwd=current_release_run)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    written = records(out)
    assert [r['path'] for r in written] == ['create', 'set_input_size']   # only the case left ran
    assert 'schema' not in written[0] and written[1]['schema'] == schema.RECORD.version
    assert json.loads((out / 'run.json').read_text())['results_schema'] == schema.RUN.version
