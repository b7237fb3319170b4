"""tools/benchmarks/small_scale.py --quick, end to end as the README's main job runs it."""
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(__file__))


def test_small_scale_quick(tmp_path):
    out = str(tmp_path / 'small')
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/small_scale.py', '--quick', '--out', out], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(osp.join(out, 'results.json')) as f:
        summary = json.load(f)
    assert {r['method'] for r in summary['results']} == {'mocov3', 'repre'}
    for r in summary['results']:
        for key in ('knn_cls', 'knn_patch_mean', 'linear_cls'):
            assert 0 <= r[key] <= 100
        assert r['wall_s'] > 0 and r['images_per_s'] > 0
        assert r['loss_last'] < r['loss_first'], r  # the run learned something
    refs = summary['references']
    assert 10 < refs['raw_pixel_knn'] <= 100 and len(refs['untrained_knn_cls']) == 1
    diff = summary['paired']['repre']['knn_cls']
    assert len(diff['per_seed']) == 1
    assert osp.getsize(summary['picture']) > 1000
    table = open(osp.join(out, 'results.md')).read()
    assert '| repre - mocov3 |' in table and '| raw pixels |' in table
    assert '| repre |' in proc.stdout
