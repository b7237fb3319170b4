"""tools/benchmarks/small_scale.py --quick, end to end as the README's main job runs it."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(__file__))


@pytest.mark.parametrize('framework', ['mocov3', 'dino'])
def test_small_scale_quick(tmp_path, framework):
    out = str(tmp_path / 'small')
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/small_scale.py', '--quick', '--framework', framework,
         '--out', out], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
        text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(osp.join(out, 'results.json')) as f:
        summary = json.load(f)
    assert summary['settings']['framework'] == framework
    assert {r['method'] for r in summary['results']} == {'baseline', 'repre'}
    for r in summary['results']:
        for key in ('knn_cls', 'knn_patch_mean', 'linear_cls'):
            assert 0 <= r[key] <= 100
        assert r['wall_s'] > 0 and r['images_per_s'] > 0
        if framework == 'dino' and r['method'] == 'baseline':
            # DINO's distillation loss first rises as the centred teacher sharpens
            assert 0 < r['loss_last'] < 20
        else:
            assert r['loss_last'] < r['loss_first'], r  # the run learned something
    refs = summary['references']
    assert 10 < refs['raw_pixel_knn'] <= 100 and len(refs['untrained_knn_cls']) == 1
    diff = summary['paired']['repre']['knn_cls']
    assert len(diff['per_seed']) == 1
    assert osp.getsize(summary['picture']) > 1000
    table = open(osp.join(out, 'results.md')).read()
    assert '| repre - baseline |' in table and '| raw pixels |' in table
    assert '| repre |' in proc.stdout
    # each run's exact config is kept next to its results
    assert sorted(os.listdir(osp.join(out, 'configs'))) == ['baseline_seed0.py', 'repre_seed0.py']
