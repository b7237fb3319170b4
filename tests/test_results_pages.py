"""The results pages say what their JSON says: every paired-difference row of
``docs/results/*.md`` (per seed, mean, interval, verdict) and every interval of the README's
headline table is found, to the printed digits, in one of the JSON files the benchmarks wrote
there. A number typed by hand, or left behind by a re-run, fails here."""
import glob
import json
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
RESULTS = osp.join(ROOT, 'docs', 'results')
ROW = re.compile(r'^\| (?P<name>[^|]+) \| (?P<metric>[^|]+) \| (?P<per_seed>[-+0-9. /]+) \| '
                 r'(?P<mean>[-+][0-9.]+) \| (?P<ci>\[[-+0-9., ]+\]|-) \| (?P<verdict>[^|]+) \|$')
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
