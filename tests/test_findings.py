"""harness findings: failed cases grouped by root cause, from hand-made records (no timm run)."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from harness import cli
from harness.analysis import finding_trigger, findings
from harness.results import append_result
from harness.store.case_result import CaseResult
from harness.store.run_record import RunRecord, write_run_record

SWINS = ('swin_tiny_patch4_window7_224', 'swin_small_patch4_window7_224', 'swin_base_patch4_window7_224')
FAMILIES = {name: 'swin' for name in SWINS} | {'vit_tiny_patch16_224': 'vit'}
TABLE = 'layers.{}.blocks.{}.attn.relative_position_index'


def _family(record: dict) -> str:
    return FAMILIES[record['model_name']]


def _case(model: str, path: str, status: str = 'failed', check: str = 'fidelity', stage: int = 0,
          img_size=(64, 48), source=(48, 48), **fields) -> CaseResult:
    """A failed case of a model resized from ``source`` (a square one to a rectangular grid by default)."""
    return CaseResult(case_id=f'{model}-timm-{img_size[0]}x{img_size[1]}-{path}-{check}', matrix='m', model=model,
                      origin='timm', img_size=list(img_size), patch_size=4, window_size=7, path=path,
                      model_name=model, source_img_size=list(source), source_patch_size=4, source_window_size=7,
                      status=status, failed_checks=[check] if status == 'failed' else [],
                      fidelity_worst_tensor=TABLE.format(stage, stage + 1), timm_version='1.0.31', **fields)


def _run(run_dir: Path, cases: list[CaseResult]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_record(run_dir, RunRecord(timm_version='1.0.31', argv=['harness', 'run', 'm.yaml']))
    for case in cases:
        append_result(run_dir, case)
    return run_dir


def _swin_cases() -> list[CaseResult]:
    """6 fidelity failures of the same table, 3 Swin models x 2 paths, in different stages; a passed case."""
    cases = [_case(model, path, stage=n) for n, model in enumerate(SWINS) for path in ('create', 'set_input_size')]
    return cases + [_case('vit_tiny_patch16_224', 'create', status='passed')]


def test_one_cause_across_models_and_paths_is_one_finding(tmp_path):
    report = findings.findings_of(_run(tmp_path, _swin_cases()), _family)
    assert report.cases == 6 and len(report.findings) == 1
    finding = report.findings[0]
    assert finding.architectures == sorted(SWINS)
    assert finding.paths == ['create', 'set_input_size'] and len(finding.case_ids) == 6
    assert finding.signature == findings.Signature('swin', 'fidelity', 'relative_position_index', 'rectangular grid')
    assert finding.title == 'swin: fidelity fails on a rectangular grid at relative_position_index'
    assert finding.tensors == [TABLE.format('*', '*')]
    assert finding.representative in finding.case_ids
    assert finding.repro == f'harness repro {tmp_path} {finding.representative}'


def test_one_table_resized_by_one_loader_is_one_finding_wherever_it_sits(tmp_path):
    """MaxViT's window and grid attention and CoAtNet's transformer blocks hold the same relative-position table
    at three module paths, resized by one loader: one finding listing the three places. The parameters of another
    module (a weight, named by its module) and another table stay findings of their own."""
    places = ('stages.1.blocks.0.attn_block.attn.rel_pos.relative_position_bias_table',
              'stages.2.blocks.1.attn_grid.attn.rel_pos.relative_position_bias_table',
              'stages.3.blocks.0.attn.rel_pos.relative_position_bias_table')
    cases = [dataclasses.replace(_case(SWINS[0], 'create'), case_id=f'case-{n}', fidelity_worst_tensor=place)
             for n, place in enumerate(places)]
    cases += [dataclasses.replace(_case(SWINS[1], 'create'), case_id=f'other-{n}', fidelity_worst_tensor=name)
              for n, name in enumerate(('stages.3.blocks.0.attn.rel_pos.mlp.0.weight',
                                        'stages.3.blocks.0.attn.rel_pos.relative_position_index'))]
    report = findings.findings_of(_run(tmp_path, cases), _family)
    by_tensor = {f.signature.differs: f for f in report.findings}
    assert sorted(by_tensor) == ['mlp.weight', 'relative_position_bias_table', 'relative_position_index']
    assert by_tensor['relative_position_bias_table'].tensors == sorted(
        findings.normalised(place) for place in places)
    assert len(by_tensor['relative_position_bias_table'].case_ids) == 3
    assert '`stages.*.blocks.*.attn_grid.attn.rel_pos.relative_position_bias_table`' in report.to_markdown()


def test_a_path_that_mishandles_a_non_square_source_is_one_finding_whatever_check_shows_it(tmp_path):
    """A loader that reads a rectangular source as square raises for a target of another token count and loads
    the transposed target's table unresampled: one finding per family and path (create), listing both symptoms
    (timm 1.0.31's BEiT, MaxxViT, Swin and hybrid ViT loaders, in the zoo sweep). The same source through
    set_input_size, another function, is another finding; a check no loader's reading explains (parity) and a
    square source stay findings of their own."""
    error = "create_model(img_size=(64, 64)) raised ValueError: Cannot infer non-square source window (loading /t/a)"
    transposed = [_case(model, 'create', img_size=(64, 48), source=(48, 64)) for model in SWINS]
    raising = [dataclasses.replace(_case(model, 'create', check='resize', img_size=(64, 64), source=(48, 64)),
                                   resize_error=error) for model in SWINS[:2]]
    others = [_case(SWINS[0], 'set_input_size', img_size=(64, 48), source=(48, 64)),
              _case(SWINS[0], 'create', check='parity', img_size=(64, 48), source=(48, 64)),
              dataclasses.replace(_case(SWINS[0], 'create', img_size=(64, 48), source=(48, 48)), case_id='square')]
    report = findings.findings_of(_run(tmp_path, transposed + raising + others), _family)
    assert [len(f.case_ids) for f in report.findings] == [5, 1, 1, 1]
    source = report.findings[0]
    assert source.signature == findings.Signature('swin', findings.SOURCE_READ, '', 'rectangular source grid',
                                                  'create')
    assert source.title == 'swin: create fails from a rectangular source grid'
    assert source.symptoms == {'fidelity fails on a transposed grid at relative_position_index': 3,
                               'resize fails on a rectangular source grid: ValueError: Cannot infer non-square '
                               'source window (loading FILE': 2}
    assert source.architectures == sorted(SWINS) and source.tensors == [TABLE.format('*', '*')]
    assert {f.title for f in report.findings[1:]} == {
        'swin: set_input_size fails from a rectangular source grid',
        'swin: parity fails on a transposed grid',
        'swin: fidelity fails on a rectangular grid at relative_position_index'}
    assert '  - resize fails on a rectangular source grid' in report.to_markdown()


def test_a_new_symptom_of_an_open_finding_is_said_against_the_previous_findings(tmp_path, capsys, monkeypatch):
    """A second defect of a family and path with a non-square source joins the open finding; against last night's
    findings.json it is a new symptom, marked in the summary, the table and findings.md. A findings.json from
    before symptoms were recorded makes none new."""
    monkeypatch.setattr(findings, 'family_name', _family)
    transposed = [_case(model, 'create', img_size=(64, 48), source=(48, 64)) for model in SWINS]
    last_night = _run(tmp_path / 'last', transposed)
    assert cli.main(['findings', str(last_night)]) == 1
    error = 'create_model(img_size=(64, 64)) raised ValueError: Cannot infer non-square source window'
    raising = dataclasses.replace(_case(SWINS[0], 'create', check='resize', img_size=(64, 64), source=(48, 64)),
                                  resize_error=error)
    tonight = _run(tmp_path / 'tonight', transposed + [raising])
    capsys.readouterr()
    assert cli.main(['findings', str(tonight), '--previous', str(last_night / 'findings.json')]) == 1
    out = capsys.readouterr().out
    assert 'findings: 1 finding from 4 failed cases: 0 new finding, 1 new symptom, 0 still open, 0 gone' in out
    assert 'new symptom  swin: create fails from a rectangular source grid' in out
    body = json.loads((tonight / 'findings.json').read_text())
    assert body['findings'][0]['new_symptoms'] == [
        'resize fails on a rectangular source grid: ValueError: Cannot infer non-square source window']
    assert '  - resize fails on a rectangular source grid: ValueError: Cannot infer non-square source window ' \
        '(1 case) **new**' in (tonight / 'findings.md').read_text()
    older = json.loads((last_night / 'findings.json').read_text())
    for finding in older['findings']:
        del finding['symptoms']
    (tmp_path / 'older.json').write_text(json.dumps(older))
    capsys.readouterr()
    assert cli.main(['findings', str(tonight), '--previous', str(tmp_path / 'older.json')]) == 1
    assert '0 new finding, 1 still open, 0 gone' in capsys.readouterr().out


def test_another_check_or_trigger_is_another_finding(tmp_path):
    other_check = _case(SWINS[0], 'create', check='parity')
    square = dataclasses.replace(_case(SWINS[1], 'create', img_size=(64, 64), source=(48, 48)),
                                 case_id='square-window', window_size=[4, 4])
    report = findings.findings_of(_run(tmp_path, _swin_cases() + [other_check, square]), _family)
    assert [len(f.case_ids) for f in report.findings] == [6, 1, 1]
    signatures = {(f.signature.check, f.signature.trigger) for f in report.findings}
    assert signatures == {('fidelity', 'rectangular grid'), ('parity', 'rectangular grid'),
                          ('fidelity', 'window change')}


def test_ids_are_stable_and_independent_of_case_order(tmp_path):
    cases = _swin_cases() + [_case(SWINS[0], 'dynamic', check='parity')]
    first = findings.findings_of(_run(tmp_path / 'a', cases), _family)
    random.Random(0).shuffle(cases)
    again = findings.findings_of(_run(tmp_path / 'b', cases), _family)
    assert [f.id for f in first.findings] == [f.id for f in again.findings]
    assert [f.case_ids for f in first.findings] == [f.case_ids for f in again.findings]
    assert findings.findings_of(tmp_path / 'a', _family).to_json() == first.to_json()
    assert first.findings[0].id == findings.Signature('swin', 'fidelity', 'relative_position_index',
                                                      'rectangular grid').id()


@pytest.mark.parametrize('source, target, window, expected', [
    ((48, 64), (64, 48), (7, 7), 'transposed grid'),
    ((48, 64), (64, 64), (7, 7), 'rectangular source grid'),
    ((48, 48), (64, 48), (7, 7), 'rectangular grid'),
    ((48, 48), (64, 64), (4, 7), 'rectangular window'),
    ((48, 48), (48, 48), (4, 4), 'window change'),
])
def test_trigger_names_what_the_case_changed_of_its_source(source, target, window, expected):
    record = {'source_img_size': list(source), 'img_size': list(target), 'source_window_size': 7,
              'window_size': list(window), 'source_patch_size': 16, 'patch_size': 16}
    assert finding_trigger.trigger(record) == expected
    # a window read wrongly fails every grid: the window is the trigger, whatever the grid does
    assert finding_trigger.trigger({**record, 'source_window_size': [4, 7], 'window_size': [4, 7]}) == \
        'rectangular source window'
    assert finding_trigger.trigger({**record, 'patch_size': 8, 'window_size': 7}) == 'patch change'   # before the grid


def test_a_padded_input_is_its_own_trigger():
    """A dynamic_img_pad model at a size its patch does not divide (the zoo sweep's img_pad targets): the
    padding is what fails, not the rectangular grid it also is."""
    record = {'source_img_size': [224, 224], 'img_size': [231, 241], 'source_patch_size': 14, 'patch_size': None,
              'model_overrides': {'dynamic_img_pad': True, 'depth': 1}}
    assert finding_trigger.trigger(record) == 'padded input'
    assert finding_trigger.trigger({**record, 'img_size': [238, 252]}) == 'rectangular grid'   # whole patches
    assert finding_trigger.trigger({**record, 'model_overrides': {}}) == 'rectangular grid'


def test_errors_group_with_their_sizes_erased():
    one = {'status': 'failed', 'failed_checks': ['resize'],
           'resize_error': 'create_model(window_size=7) raised: ValueError: table 169 (loading /tmp/a1/ck.pth)'}
    two = {**one, 'resize_error': 'create_model(window_size=(4, 6)) raised: ValueError: table 63 (loading /x/b2.pth)'}
    assert findings.signature(one, 'swin') == findings.signature(two, 'swin')
    assert findings.signature(one, 'swin').differs == 'ValueError: table N (loading FILE'
    assert findings.title(findings.signature(one, 'swin')) == 'swin: resize fails: ValueError: table N (loading FILE'
    assert findings.normalised('stages.3.blocks.10.attn.rel_pos') == 'stages.*.blocks.*.attn.rel_pos'


def test_the_command_writes_findings_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(findings, 'family_name', _family)
    run_dir = _run(tmp_path / 'run', _swin_cases())
    assert cli.main(['findings', str(run_dir), '--out', str(tmp_path / 'out')]) == 1
    assert 'findings: 1 finding from 6 failed cases' in capsys.readouterr().out
    body = json.loads((tmp_path / 'out' / 'findings.json').read_text())
    assert body['schema'] == 1 and body['findings'][0]['architectures'] == sorted(SWINS)
    assert 'harness repro' in (tmp_path / 'out' / 'findings.md').read_text()
    clean = _run(tmp_path / 'clean', [_case(SWINS[0], 'create', status='passed'), _case(SWINS[1], 'create',
                                                                                        status='xfailed')])
    assert cli.main(['findings', str(clean)]) == 0 and (clean / 'findings.json').is_file()
    assert cli.main(['findings', str(clean), '--xfailed']) == 1   # the known defects the matrix marks


def test_against_the_previous_findings_each_is_new_or_still_open_and_the_rest_gone(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(findings, 'family_name', _family)
    last_night = _run(tmp_path / 'last', _swin_cases() + [_case('vit_tiny_patch16_224', 'create', check='parity')])
    assert cli.main(['findings', str(last_night)]) == 1
    tonight = _run(tmp_path / 'tonight', _swin_cases()[:2] + [_case(SWINS[0], 'create', check='shapes')])
    capsys.readouterr()
    assert cli.main(['findings', str(tonight), '--previous', str(last_night / 'findings.json')]) == 1
    out = capsys.readouterr().out
    assert 'findings: 2 findings from 3 failed cases: 1 new finding, 1 still open, 1 gone' in out
    body = json.loads((tonight / 'findings.json').read_text())
    changes = {f['signature']['check']: f['change'] for f in body['findings']}
    assert changes == {'fidelity': 'open', 'shapes': 'new'}   # the fidelity finding lost 4 cases: the same one
    assert [g['title'] for g in body['gone']] == ['vit: parity fails on a rectangular grid']
    markdown = (tonight / 'findings.md').read_text()
    assert ', still open' in markdown and ', new finding' in markdown
    assert f'## Gone since {last_night / "findings.json"}' in markdown
    # the folder names it as well; without --previous there is no change at all
    assert cli.main(['findings', str(tonight), '--previous', str(last_night)]) == 1
    assert cli.main(['findings', str(tonight)]) == 1
    body = json.loads((tonight / 'findings.json').read_text())
    assert body['previous'] is None and body['gone'] == [] and {f['change'] for f in body['findings']} == {None}


def test_a_bad_previous_findings_json_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(findings, 'family_name', _family)
    run_dir = _run(tmp_path / 'run', _swin_cases())
    bad = {'garbage.json': 'not json', 'old.json': '{"schema": 0, "findings": []}',
           'untitled.json': '{"schema": 1, "findings": [{"id": "abc"}]}'}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
    for name, says in (('nothing.json', '--previous: '), ('garbage.json', 'not readable JSON'),
                       ('old.json', 'schema, findings: expected'), ('untitled.json', 'findings[0]: expected')):
        assert cli.main(['findings', str(run_dir), '--previous', str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and says in err and len(err.strip().splitlines()) == 1, err


def test_a_compare_says_where_a_regression_first_appears(tmp_path, monkeypatch):
    base = _run(tmp_path / 'base', [_case(SWINS[0], 'create', status='passed')])
    new = _run(tmp_path / 'new', [_case(SWINS[0], 'create')])
    assert cli.main(['compare', str(base), str(new), '--out', str(tmp_path / 'cmp')]) == 1
    report = findings.findings_of(tmp_path / 'cmp', _family)
    assert report.kind == 'compare' and [f.first_seen for f in report.findings] == ['1.0.31']
    assert report.findings[0].repro.startswith(f'harness repro {new}')


def test_a_compare_made_elsewhere_finds_its_new_run(tmp_path, monkeypatch):
    """`harness compare reports/base reports/new --out reports/cmp` run in tmp_path, findings read from another
    folder: the relative label is found from the compare folder's parents."""
    _run(tmp_path / 'reports' / 'base', [_case(SWINS[0], 'create', status='passed')])
    _run(tmp_path / 'reports' / 'new', [_case(SWINS[0], 'create')])
    monkeypatch.chdir(tmp_path)
    assert cli.main(['compare', 'reports/base', 'reports/new', '--out', 'reports/cmp']) == 1
    monkeypatch.chdir(tmp_path / 'reports' / 'base')
    report = findings.findings_of(tmp_path / 'reports' / 'cmp' / 'compare.json', _family)
    assert [len(f.case_ids) for f in report.findings] == [1] and report.kind == 'compare'


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'cmp').mkdir()
    (tmp_path / 'cmp' / 'compare.json').write_text('{"new": {"label": "gone"}, "cases": []}')
    (tmp_path / 'garbage').mkdir()
    (tmp_path / 'garbage' / 'results.jsonl').write_text('not json\n{"case_id": "x", "status": "passed"}\n')
    for folder, says in (('nowhere', 'no such folder'), ('empty', 'neither results.jsonl nor compare.json'),
                         ('cmp', 'new.label'), ('garbage', 'results.jsonl:1')):
        assert cli.main(['findings', str(tmp_path / folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('error: ') and says in err and len(err.strip().splitlines()) == 1, err


def test_the_family_is_the_one_the_overrides_build():
    """use_naflex=True builds a ViT name as a NaFlexVit: a finding of that family, not of the ViT's."""
    record = {'model_name': 'vit_tiny_patch16_224', 'model_overrides': {'use_naflex': True, 'depth': 1}}
    assert findings.family_name(record) == 'naflexvit'
    assert findings.family_name({**record, 'model_overrides': {'depth': 1}}) == 'vit'
    assert findings.family_name({'model_name': 'no_such_model', 'model_overrides': {}}) == 'unclaimed'


def test_a_record_names_its_family_and_an_older_one_is_looked_up(monkeypatch):
    """Records name their family (no timm import to group them); one of an older harness, without the field or
    with it blank, is looked up by its model."""
    record = {'model_name': 'vit_tiny_patch16_224', 'model_overrides': {'use_naflex': True}, 'family': 'swin'}
    assert findings.family_name(record) == 'swin'
    assert findings.family_name({**record, 'family': ''}) == 'naflexvit'
    assert findings.family_name({k: v for k, v in record.items() if k != 'family'}) == 'naflexvit'
    monkeypatch.setattr(findings, '_family_name', None)   # a lookup now would raise
    assert findings.family_name(record) == 'swin'


def test_report_md_leads_with_the_findings(tmp_path, monkeypatch):
    from harness.analysis.report import write_report
    monkeypatch.setattr(findings, 'family_name', _family)
    run_dir = _run(tmp_path, _swin_cases())
    markdown = write_report(run_dir / 'results.jsonl', run_dir).markdown.read_text()
    assert markdown.index('## Findings') < markdown.index('## Summary') < markdown.index('## Failures')
    assert '**1 finding from 6 failed cases**' in markdown
    assert "### swin: fidelity fails on a rectangular grid at relative_position_index" in markdown
    clean = _run(tmp_path / 'clean', [_case(SWINS[0], 'create', status='passed')])
    assert '## Findings' not in write_report(clean / 'results.jsonl', clean).markdown.read_text()
