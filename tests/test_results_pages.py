"""The results pages say what their JSON says: every paired-difference row of
``docs/results/*.md`` (per seed, mean, interval, verdict), every ``mean ± sd`` cell of their
per-method tables and every interval of the README's headline table is found, to the printed
digits, in one of the JSON files the benchmarks wrote there. A number typed by hand, or left
behind by a re-run, fails here."""
import glob
import json
import os.path as osp
import re
import statistics

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(ROOT, 'docs', 'results')
ROW = re.compile(r'^\| (?P<name>[^|]+) \| (?P<metric>[^|]+) \| (?P<per_seed>[-+0-9. /]+) \| '
                 r'(?P<mean>[-+][0-9.]+) \| (?P<ci>\[[-+0-9., ]+\]|-) \| (?P<verdict>[^|]+) \|$')
MEAN_SD = re.compile(r'^[0-9]+\.[0-9]{2} ± [0-9]+\.[0-9]{2}$')  # a table cell: mean ± sd
INTERVAL = re.compile(r'([-+][0-9]+\.[0-9]{2}) \[([-+][0-9]+\.[0-9]{2}), ([-+][0-9]+\.[0-9]{2})\]')


def stored_differences():
    """Every paired difference of every JSON in docs/results, as the tables print it:
    {(per seed, mean, interval, verdict)}."""
    printed = set()
    for path in glob.glob(osp.join(RESULTS, '*.json')):
        with open(path) as f:
            results = json.load(f)
        for paired in _paired_blocks(results):
            for diff in paired.values():
                for d in diff.values():
                    if not isinstance(d, dict) or 'per_seed' not in d:
                        continue
                    ci = f'[{d["ci"][0]:+.2f}, {d["ci"][1]:+.2f}]' if d['ci'] else '-'
                    printed.add((' / '.join(f'{v:+.2f}' for v in d['per_seed']),
                                 f'{d["mean"]:+.2f}', ci, d['verdict']))
    return printed


def _paired_blocks(node):
    """The ``paired`` dicts anywhere in a results JSON (the study nests some)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'paired' and isinstance(value, dict):
                yield value
            else:
                yield from _paired_blocks(value)
    elif isinstance(node, list):
        for value in node:
            yield from _paired_blocks(value)


def stored_means():
    """Every 'mean ± sd' the per-method tables can print from the JSONs in docs/results: per
    list of per-seed runs (grouped by ``method`` where the runs name one) and numeric key."""
    printed = set()
    for path in glob.glob(osp.join(RESULTS, '*.json')):
        with open(path) as f:
            results = json.load(f)
        for runs in _run_lists(results):
            groups = {}
            for run in runs:
                groups.setdefault(run.get('method'), []).append(run)
            for group in groups.values():
                for key in set().union(*group):
                    values = [run.get(key) for run in group]
                    if len(values) > 1 and all(isinstance(v, (int, float)) and
                                               not isinstance(v, bool) for v in values):
                        printed.add(f'{statistics.mean(values):.2f} ± '
                                    f'{statistics.stdev(values):.2f}')
    return printed


def _run_lists(node):
    """The lists of per-run dicts anywhere in a results JSON."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _run_lists(value)
    elif isinstance(node, list):
        if len(node) > 1 and all(isinstance(run, dict) for run in node):
            yield node
        for value in node:
            yield from _run_lists(value)


def mean_cells(path):
    with open(path) as f:
        return [cell.strip() for line in f.read().splitlines() if line.startswith('| ')
                for cell in line.strip('|').split('|') if MEAN_SD.match(cell.strip())]


def page_rows(path):
    with open(path) as f:
        return [m.groupdict() for m in map(ROW.match, f.read().splitlines()) if m]


PAGES = sorted(glob.glob(osp.join(RESULTS, '*.md')))


@pytest.mark.parametrize('page', PAGES, ids=[osp.basename(p) for p in PAGES])
def test_every_paired_row_of_a_results_page_is_in_its_json(page):
    stored = stored_differences()
    rows = page_rows(page)
    missing = [r for r in rows if (r['per_seed'].strip(), r['mean'], r['ci'],
                                   r['verdict'].strip()) not in stored]
    assert not missing, f'{osp.basename(page)}: rows no JSON in docs/results holds: {missing[:3]}'


@pytest.mark.parametrize('page', PAGES, ids=[osp.basename(p) for p in PAGES])
def test_every_mean_and_sd_of_a_results_page_is_in_its_json(page):
    stored = stored_means()
    missing = [cell for cell in mean_cells(page) if cell not in stored]
    assert not missing, f'{osp.basename(page)}: mean ± sd cells no JSON holds: {missing[:5]}'


def test_the_readme_headline_intervals_are_in_the_json():
    with open(osp.join(ROOT, 'README.md')) as f:
        text = f.read()
    table = [line for line in text.splitlines()
             if line.startswith('| ') and INTERVAL.search(line)]
    assert table, 'the README has no headline table of intervals'
    stored = {(mean, ci) for _, mean, ci, _ in stored_differences()}
    for line in table:
        for mean, low, high in INTERVAL.findall(line):
            assert (mean, f'[{low}, {high}]') in stored, line


def test_a_changed_number_is_caught(tmp_path):
    """The check can fail: one digit changed in a real row is no longer found."""
    page = next(p for p in PAGES if page_rows(p))
    row = page_rows(page)[0]
    stored = stored_differences()
    changed = f'{float(row["mean"]) + 0.01:+.2f}'
    assert (row['per_seed'].strip(), changed, row['ci'], row['verdict'].strip()) not in stored
    cell = next(c for p in PAGES for c in mean_cells(p))
    mean, sd = cell.split(' ± ')
    assert f'{float(mean) + 0.01:.2f} ± {sd}' not in stored_means()
