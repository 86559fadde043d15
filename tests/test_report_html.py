"""report.html from hand-made records: one self-contained file (nothing fetched from elsewhere), with plots."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.analysis.report import write_report
from harness.results import RESULTS_FILE, append_result
from harness.store.case_result import HELD, CaseResult
from harness.store.run_record import RunRecord, write_run_record

LONG_REASON = ('parity: max abs diff 0.5 > atol 0.001 between set_input_size and create\n'
               + 'the worst logits differ at image 3, class 17; ' * 6 + '<end of reason>')
# attributes through which a page loads something; each must point inside the page or be inline data
LOADING_ATTRIBUTES = ('src', 'href', 'xlink:href', 'srcset', 'action', 'poster', 'data', 'background')


class _Page(HTMLParser):
    """Tags, attributes and style text of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or '' for name, value in attrs}))
        self._in_style = tag == 'style'

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def parsed(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def remote_references(text: str) -> list[str]:
    """Everything in a page that a browser would fetch from outside it: scripts and stylesheets by reference,
    loading attributes that point elsewhere, CSS url()/@import, and any other address (an SVG's ``xmlns``
    namespace names are names, never fetched)."""
    page = parsed(text)
    found = [f'<{tag}>' for tag, attrs in page.tags if tag in ('script', 'link', 'iframe', 'object', 'embed')]
    found += [f'{tag} {name}={value}' for tag, attrs in page.tags for name, value in attrs.items()
              if name in LOADING_ATTRIBUTES and not value.startswith(('#', 'data:'))]
    found += [css for css in re.findall(r'url\([^)]*\)|@import[^;]*', ' '.join(page.styles))
              if not re.match(r'url\([\'"]?(#|data:)', css)]
    without_namespaces = re.sub(r'\sxmlns(:\w+)?="[^"]*"', '', text)
    found += re.findall(r'(?:https?:)?//[\w.-]+\.\w+[^\s"\'<>]*', without_namespaces)
    return found


def test_the_checker_finds_what_a_page_would_fetch():
    assert remote_references('<html><body><svg xmlns="http://www.w3.org/2000/svg"></svg></body></html>') == []
    for page in ('<script src="https://cdn.example.org/plotly.min.js"></script>', '<script>1</script>',
                 '<link rel="stylesheet" href="style.css">', '<img src="//cdn.example.org/a.png">',
                 '<style>body { background: url(https://example.org/a.png) }</style>',
                 '<a href="https://example.org/more">more</a>'):
        assert remote_references(page), page


def _case(model, path, size, samples, status='passed', **figures) -> CaseResult:
    return CaseResult(
        case_id=f'{model}-timm-{size[0]}x{size[1]}-{path}', matrix='smoke', model=model, origin='timm',
        img_size=list(size), patch_size=16, window_size=7 if model.startswith('swin') else None, path=path,
        family=model.split('_')[0], status=status, device='cpu', device_name='Test CPU', dtype='fp32',
        precision='amp', compile=False, channels_last=False, batch_size=2, batch_size_used=2,
        drift_cosine=0.99 - size[1] / 10000,
        time_samples_ms=samples, time_median_ms=sorted(samples)[len(samples) // 2], images_per_s=2000 / samples[0],
        timing_repeats=len(samples), timing_stable=len(set(samples)) == 1, timing_max_cv=0.05,
        flops_per_image=1_000_000, **figures)


CASES = [
    _case('vit_tiny', 'create', (64, 64), [10.0] * 7),
    _case('vit_tiny', 'set_input_size', (64, 64), [10.0, 11.0, 30.0, 10.5, 10.2, 10.1, 10.0]),
    _case('vit_tiny', 'create', (64, 128), [21.0] * 7),
    _case('vit_tiny', 'set_input_size', (64, 128), [21.0] * 7, status='failed', failed_checks=['parity'],
          reason=LONG_REASON),
    _case('swin_tiny', 'dynamic', (128, 128), [40.0] * 7),
    _case('swin_tiny', 'create', (128, 192), [60.0] * 7, status='error', reason='RuntimeError: boom'),
]


@pytest.fixture
def report(tmp_path) -> str:
    for case in CASES:
        append_result(tmp_path, case)
    write_run_record(tmp_path, RunRecord(results_schema=2, timm_version='1.0.31', device='cpu', dtype='fp32',
                                         argv=['harness', 'run', 'matrices/smoke.yaml'], matrix_name='smoke'))
    files = write_report(tmp_path / RESULTS_FILE, tmp_path / 'report')
    assert files.html == tmp_path / 'report' / 'report.html'
    return files.html.read_text()


def test_report_html_is_self_contained_with_plots(report):
    assert remote_references(report) == []
    page = parsed(report)
    titles = [data for data in re.findall(r'<h2>(.*?)</h2>', report)]
    assert titles == ['Findings', 'Summary: status per model × origin × path',
                      'Throughput and drift against input size', 'Timing distributions', 'Timing', 'Failures',
                      'Environment']
    svgs = [attrs for tag, attrs in page.tags if tag == 'svg']
    assert len(svgs) == 6   # throughput and drift for each model, and each model's timing distribution
    plots = report[report.index('Throughput and drift'):report.index('Timing distributions')]
    assert all(text in plots for text in ('images/s', 'cosine to native', '64x64', '64x128', 'set_input_size'))
    assert 'recorded, not judged' in plots
    ids = re.findall(r'\sid="([^"]+)"', report)
    assert len(ids) == len(set(ids))   # inline SVGs share one document: no id twice


def test_report_html_shows_failures_in_full_and_the_environment(report, tmp_path):
    failures = report[report.index('<h2>Failures</h2>'):report.index('<h2>Environment</h2>')]
    assert len(LONG_REASON) > 200 and LONG_REASON.replace('<', '&lt;').replace('>', '&gt;') in failures
    assert 'RuntimeError: boom' in failures and '<script' not in report
    # the failed case says how to reproduce it upstream; the error (the harness's own fault) does not
    rows = failures.split('<tr>')[2:]
    failed, errored = (next(row for row in rows if f'>{status}<' in row) for status in ('failed', 'error'))
    assert f'<code>harness repro {tmp_path} ' in failed and 'harness repro' not in errored
    environment = report[report.index('<h2>Environment</h2>'):]
    assert 'run.json beside' in environment and '<th>timm_version</th><td>1.0.31</td>' in environment
    assert 'harness run matrices/smoke.yaml' in environment
    grid = report[report.index('<h2>Summary'):report.index('<h2>Throughput')]
    assert '<td class="bad">1 passed, 1 failed</td>' in grid and '<td class="good">1 passed</td>' in grid


def test_report_html_leads_with_the_findings(report, tmp_path):
    """The failed case is one finding (the error is the harness's, not a finding), with its repro command."""
    findings = report[report.index('<h2>Findings</h2>'):report.index('<h2>Summary')]
    assert '<b>1 finding from 1 failed case</b>' in findings
    assert '<h3>vit: parity fails</h3>' in findings and '1 case on set_input_size' in findings
    assert f'<code>harness repro {tmp_path} vit_tiny-timm-64x128-set_input_size</code>' in findings
    assert 'swin' not in findings


def test_report_html_of_records_alone(tmp_path):
    """No run.json (an older folder) and nothing timed: the environment comes from the records."""
    append_result(tmp_path, CaseResult(case_id='vit-timm-64x64-create', matrix='m', model='vit', origin='timm',
                                       img_size=[64, 64], patch_size=None, window_size=None, path='create',
                                       status='passed', timm_version='1.0.31', drift_cosine=0.98))
    html = write_report(tmp_path / RESULTS_FILE, tmp_path).html.read_text()
    assert 'the records of' in html and 'No timing figures recorded.' in html
    assert html.count('<svg') == 2 and remote_references(html) == []   # throughput (empty) and drift


def test_report_html_of_no_results(tmp_path):
    (tmp_path / RESULTS_FILE).write_text('')
    html = Path(write_report(tmp_path / RESULTS_FILE, tmp_path).html).read_text()
    assert '0 cases' in html and '<svg' not in html


def test_report_html_groups_unsupported_reasons(tmp_path):
    """One row per reason, with its count, paths and case ids; the checks each case held do not split a group."""
    why = 'dynamic_img_size changes only the input size; this case also changes the patch or window size'
    cases = [_case('vit_tiny', 'dynamic', size, [10.0], status='unsupported', reason=f'{why}{HELD}{held}')
             for size, held in (((64, 64), 'load'), ((64, 128), 'load, reload'))]
    cases.append(_case('swin_tiny', 'set_input_size', (64, 64), [10.0], status='unsupported',
                       reason='SwinTransformer has no set_input_size in this timm release'))
    for case in cases:
        append_result(tmp_path, case)
    html = write_report(tmp_path / RESULTS_FILE, tmp_path).html.read_text()
    section = html[html.index('<h2>Unsupported</h2>'):html.index('<h2>Environment</h2>')]
    rows = section.split('<tr>')[2:]
    assert len(rows) == 2 and '3 cases unsupported' in section
    assert rows[0].startswith('<td>2</td><td>dynamic</td><td><pre>dynamic_img_size changes only')
    assert 'vit_tiny-timm-64x64-dynamic\nvit_tiny-timm-64x128-dynamic' in rows[0]
    assert rows[1].startswith('<td>1</td><td>set_input_size</td><td><pre>SwinTransformer has no set_input_size')
