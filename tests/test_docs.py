"""The README and the docs pages: every claim names a test that exists, every link resolves,
and the README stays short enough to read top to bottom."""
import glob
import os.path as osp
import re

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PAGES = sorted([osp.join(ROOT, 'README.md'), osp.join(ROOT, 'configs/repre/README.md')] +
               glob.glob(osp.join(ROOT, 'docs/**/*.md'), recursive=True))
TEST_REF = re.compile(r'(?:tests/)?(test_\w+\.py)::(\w+)')
LINK = re.compile(r'\]\(([^)#\s]+)(?:#[^)]*)?\)')


def page_id(path):
    return osp.relpath(path, ROOT)


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_every_named_test_exists(page):
    """A sentence that names `tests/<file>.py::<test>` as its proof names a real test."""
    missing = []
    for file, name in TEST_REF.findall(open(page).read()):
        path = osp.join(ROOT, 'tests', file)
        source = open(path).read() if osp.exists(path) else ''
        if not re.search(rf'^def {name}\(', source, re.MULTILINE):
            missing.append(f'{file}::{name}')
    assert not missing, f'{page_id(page)} names tests that do not exist: {missing}'


@pytest.mark.parametrize('page', PAGES, ids=page_id)
def test_every_relative_link_resolves(page):
    broken = [link for link in LINK.findall(open(page).read())
              if not link.startswith(('http://', 'https://', 'mailto:'))
              and not osp.exists(osp.join(osp.dirname(page), link))]
    assert not broken, f'{page_id(page)} links to missing files: {broken}'


def test_readme_is_short_and_links_every_docs_page():
    readme = open(osp.join(ROOT, 'README.md')).read()
    assert len(readme.splitlines()) <= 250
    for page in glob.glob(osp.join(ROOT, 'docs/*.md')):
        assert f'docs/{osp.basename(page)}' in readme, f'the README does not link {page}'
