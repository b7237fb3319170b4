"""tools/benchmarks/small_scale.py --quick, end to end as the README's main job runs it, on
Fashion-MNIST and on generated colour ImageFolders."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(__file__))
sys.path.insert(0, osp.join(ROOT, 'tools', 'benchmarks'))
METRICS = ('knn_cls', 'knn_patch_mean', 'linear_cls', 'dense_miou', 'dense_miou_mid',
           'dense_pixel_acc')
VERDICTS = {'better', 'worse', 'no measurable difference'}


def run_small_scale(out, *extra):
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/small_scale.py', '--quick', '--out', out, *extra],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(osp.join(out, 'results.json')) as f:
        return json.load(f), proc.stdout


def check_summary(summary, stdout, methods, seeds):
    assert {(r['method'], r['seed']) for r in summary['results']} == {
        (m, s) for m in methods for s in range(seeds)}
    for r in summary['results']:
        for key in METRICS:
            assert 0 <= r[key] <= 100, (key, r)
        assert r['wall_s'] > 0 and r['images_per_s'] > 0
        assert (r['psnr'] is None) == r['method'].startswith('baseline')
        if r['psnr'] is not None:
            assert 0 < r['psnr'] < 60
    refs = summary['references']
    assert len(refs['untrained']) == seeds
    assert 0 < refs['raw_pixels']['knn'] <= 100 and 0 < refs['raw_pixels']['dense_miou'] <= 100
    for name, diff in summary['paired'].items():
        for key in METRICS:
            d = diff[key]
            assert len(d['per_seed']) == seeds
            assert d['mean'] == pytest.approx(sum(d['per_seed']) / seeds)
            low, high = d['ci']
            assert low <= d['mean'] <= high and d['verdict'] in VERDICTS
            assert d['verdict'] == ('better' if low > 0 else 'worse' if high < 0 else
                                    'no measurable difference')
    # the one-line JSON headline carries every method and comparison
    line = json.loads(next(x for x in stdout.splitlines() if x.startswith('{"methods"')))
    assert set(line['methods']) == set(methods)
    assert set(line['paired']) == set(summary['paired'])
    assert set(line['paired']['repre - baseline']['dense_miou']) == {'mean', 'ci', 'verdict'}
    assert osp.getsize(summary['picture']) > 1000


@pytest.mark.parametrize('framework', ['mocov3', 'dino'])
def test_small_scale_quick(tmp_path, framework):
    out = str(tmp_path / 'small')
    methods = (['baseline', 'repre', 'baseline_equal_compute'] if framework == 'mocov3'
               else ['baseline', 'repre'])
    summary, stdout = run_small_scale(out, '--framework', framework, '--methods', *methods)
    assert summary['settings']['framework'] == framework
    check_summary(summary, stdout, methods, seeds=2)
    for r in summary['results']:
        if framework == 'dino' and r['method'] == 'baseline':
            # DINO's distillation loss first rises as the centred teacher sharpens
            assert 0 < r['loss_last'] < 20
        else:
            assert r['loss_last'] < r['loss_first'], r  # the run learned something
    assert '| repre - baseline | dense mIoU (final) |' in open(osp.join(out, 'results.md')).read()
    if framework == 'mocov3':
        extra = summary['equal_compute']
        (base_iters, ) = {r['iterations'] for r in summary['results']
                          if r['method'] == 'baseline'}
        assert extra['time_ratio'] > 0
        assert extra['iters'] == max(base_iters, round(base_iters * extra['time_ratio']))
        eq = [r for r in summary['results'] if r['method'] == 'baseline_equal_compute']
        assert all(r['iterations'] == extra['iters'] for r in eq)
        assert 'repre - baseline (equal compute)' in summary['paired']
    # each run's exact config is kept next to its results
    assert sorted(os.listdir(osp.join(out, 'configs'))) == sorted(
        f'{m}_seed{s}.py' for m in methods for s in range(2))
    if framework == 'mocov3':
        # started again: every run and its scores are reused, and the summary is the same
        again, stdout = run_small_scale(out, '--framework', framework, '--methods', *methods)
        assert stdout.count('[train] reusing') == 6 and '[train] started' not in stdout
        assert stdout.count('[eval] reusing the stored scores') == 7  # 6 runs + the references
        assert again['results'] == summary['results']
        assert again['references'] == summary['references']
        # a checkpoint trained anew is scored anew
        import small_scale as ss
        os.utime(ss.checkpoint_of(osp.join(out, 'repre_seed1')))
        _, stdout = run_small_scale(out, '--framework', framework, '--methods', *methods)
        assert stdout.count('[eval] reusing the stored scores') == 6


def test_equal_compute_iterations_follow_the_measured_time_ratio(tmp_path, monkeypatch):
    import small_scale as ss
    args = ss.parse_args(['--quick', '--out', str(tmp_path)])
    times = {'baseline': 0.10, 'repre': 0.125}
    monkeypatch.setattr(ss, 'iteration_time', lambda a, method, seed: times[method] + seed * 1e-3)
    monkeypatch.setattr(ss, 'train_records', lambda work_dir: [dict(iter=40)])
    iters, ratio = ss.equal_compute_iters(args, [0])
    assert ratio == pytest.approx(1.25) and iters == 50


def test_runs_are_reported_in_the_order_asked_not_the_order_they_finish(tmp_path, monkeypatch):
    import small_scale as ss
    args = ss.parse_args(['--quick', '--out', str(tmp_path)])
    runs = [('baseline', 0, None), ('repre', 0, None)]
    for method, seed, _ in runs:
        os.makedirs(tmp_path / f'{method}_seed{seed}')

    def write_config(args, data, method, seed, iters):
        path = tmp_path / 'configs' / f'{method}_seed{seed}.py'
        os.makedirs(path.parent, exist_ok=True)
        path.write_text('')

    started, finished = [], []

    class Run:  # two runs at a time; the one started first finishes last
        returncode = 0

        def __init__(self, cmd, **kwargs):
            started.append(self)

        def poll(self):
            if self is started[-1] or started[-1] in finished:
                if self not in finished:
                    finished.append(self)
                return 0
            return None

    monkeypatch.setattr(ss, 'write_run_config', write_config)
    monkeypatch.setattr(ss, 'total_iterations', lambda *a: 1)
    monkeypatch.setattr(ss.subprocess, 'Popen', Run)
    walls = ss.train_all(args, runs, data=None)
    assert finished == started[::-1]
    assert list(walls) == [('baseline', 0), ('repre', 0)]
    assert all(w > 0 for w in walls.values())


def test_paired_stats_verdicts():
    import small_scale as ss
    assert ss.paired_stats([1.0, 1.2, 0.9])['verdict'] == 'better'
    assert ss.paired_stats([-1.0, -1.2, -0.9])['verdict'] == 'worse'
    mixed = ss.paired_stats([2.5, -0.5, -1.0])
    assert mixed['verdict'] == 'no measurable difference'
    # Student t with 2 degrees of freedom: 4.303 * sd / sqrt(3)
    half = 4.302652729911275 * np.std([2.5, -0.5, -1.0], ddof=1) / np.sqrt(3)
    assert mixed['ci'] == pytest.approx([1 / 3 - half, 1 / 3 + half])
    assert ss.paired_stats([1.0])['ci'] is None


def write_folder(root, size, ext, num_classes=3, per_class=12, seed=0):
    """Colour ImageFolder: each class a different coloured shape on a textured background."""
    import cv2
    rng = np.random.default_rng(seed)
    colours = [(255, 40, 40), (40, 200, 40), (40, 40, 255)]
    pixels = []
    for split in ('train', 'test'):
        for c in range(num_classes):
            os.makedirs(osp.join(root, split, f'class{c}'), exist_ok=True)
            for i in range(per_class if split == 'train' else per_class // 2):
                image = rng.integers(0, 80, (size, size, 3)).astype(np.uint8)
                r = size // 4 + int(rng.integers(0, size // 8))
                centre = tuple(int(v) for v in rng.integers(r, size - r, 2))
                cv2.circle(image, centre, r, colours[c][::-1], -1)  # BGR on disk
                cv2.imwrite(osp.join(root, split, f'class{c}', f'{i}.{ext}'), image)
                if split == 'train':
                    pixels.append(cv2.imread(osp.join(root, split, f'class{c}', f'{i}.{ext}'))
                                  [..., ::-1].reshape(-1, 3))
    pixels = np.concatenate(pixels).astype(np.float64)
    return pixels.mean(0), pixels.std(0)


@pytest.mark.parametrize('size,ext,patch', [(32, 'jpg', 4), (64, 'png', 8)])
def test_small_scale_on_a_colour_image_folder(tmp_path, size, ext, patch):
    data = str(tmp_path / 'folder')
    mean, std = write_folder(data, size, ext)
    out = str(tmp_path / 'out')
    summary, stdout = run_small_scale(out, '--data', data, '--methods', 'baseline', 'repre',
                                      '--dense-mosaics', '40', '20', '--batch-size', '8')
    info = summary['data_info']
    assert info['colour'] and info['img_size'] == size and info['patch'] == patch
    assert info['num_train'] == 36 and info['num_test'] == 18 and len(info['classes']) == 3
    np.testing.assert_allclose(info['mean'], mean, atol=0.01)  # computed from the images
    np.testing.assert_allclose(info['std'], std, atol=0.01)
    check_summary(summary, stdout, ['baseline', 'repre'], seeds=2)
    # the generated configs are ordinary configs that follow the data
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(out, 'configs', 'repre_seed0.py'))
    assert cfg.model.framework.backbone.img_size == size
    assert cfg.model.framework.backbone.patch_size == patch
    assert cfg.data_preprocessor.mean == info['mean']
    views = cfg.train_dataloader.dataset.pipeline[1].transforms[0]
    assert [t['type'] for t in views] == ['RandomResizedCrop', 'RandomApply', 'RandomGrayscale',
                                          'RandomFlip']
    assert views[0]['scale'] == size
