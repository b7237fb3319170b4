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
METRICS = ('knn_cls', 'knn_patch_mean', 'linear_cls', 'dense_miou', 'dense_miou_mid',
           'dense_pixel_acc')
VERDICTS = {'better', 'worse', 'no measurable difference'}


def run_small_scale(out, *extra):
    # the timeout catches a hang, not a slow machine: a run took 232 s on 2 slow cores, and
    # 900 s was exceeded beside a benchmark and another test worker
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/small_scale.py', '--quick', '--out', out, *extra],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=1800)
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
            if d['ci'] is None:  # every seed differed by the same amount
                assert len(set(d['per_seed'])) == 1 and d['verdict'].startswith('no spread')
                continue
            low, high = d['ci']
            assert low <= d['mean'] <= high and d['verdict'] in VERDICTS
            assert d['verdict'] == ('better' if low > 0 else 'worse' if high < 0 else
                                    'no measurable difference')
    # the one-line JSON headline carries every method and comparison
    line = json.loads(next(x for x in stdout.splitlines() if x.startswith('{"methods"')))
    assert set(line['methods']) == set(methods)
    assert set(line['paired']) == set(summary['paired'])
    assert set(line['paired']['repre - baseline']['knn_cls']) == {'mean', 'ci', 'verdict'}
    # the mosaic probe cannot tell trained from untrained encoders: not in the headline
    assert 'dense_miou' not in line['paired']['repre - baseline']
    assert 'dense_miou' not in line['methods']['repre']
    assert osp.getsize(summary['picture']) > 1000


@pytest.mark.parametrize('framework', ['mocov3', 'dino'])
def test_small_scale_quick(tmp_path, framework):
    out = str(tmp_path / 'small')
    methods = ['baseline', 'repre', 'baseline_equal_compute']
    summary, stdout = run_small_scale(out, '--framework', framework, '--methods', *methods)
    assert summary['settings']['framework'] == framework
    check_summary(summary, stdout, methods, seeds=2)
    for r in summary['results']:
        if framework == 'dino' and r['method'].startswith('baseline'):
            # DINO's distillation loss first rises as the centred teacher sharpens
            assert 0 < r['loss_last'] < 20
        else:
            assert r['loss_last'] < r['loss_first'], r  # the run learned something
    assert '| repre - baseline | mosaic mIoU (final) |' in open(osp.join(out, 'results.md')).read()
    # DINO's too: its temperature hook follows the passes over the data in an iteration loop
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
        assert stdout.count('[run] reusing') == 6 and '[run] started' not in stdout
        assert stdout.count('[eval] reusing the stored scores') == 7  # 6 runs + the references
        assert again['results'] == summary['results']
        assert again['references'] == summary['references']
        # a checkpoint trained anew is scored anew
        from repre_mm.benchmarks.runs import checkpoint_of
        os.utime(checkpoint_of(osp.join(out, 'repre_seed1')))
        _, stdout = run_small_scale(out, '--framework', framework, '--methods', *methods)
        assert stdout.count('[eval] reusing the stored scores') == 6


def fake_run(work_dir, iter_time, logged_iters, trained_iters):
    """A finished run's traces: scalars.json logged every 10 iterations up to the last logged
    one, and a checkpoint whose meta says how many iterations it trained."""
    import torch
    os.makedirs(osp.join(work_dir, '20261202_000000', 'vis_data'))
    with open(osp.join(work_dir, '20261202_000000', 'vis_data', 'scalars.json'), 'w') as f:
        for i in range(10, logged_iters + 1, 10):
            f.write(json.dumps(dict(iter=i, loss=1.0, time=iter_time)) + '\n')
    checkpoint = osp.join(work_dir, 'epoch_12.pth')
    torch.save(dict(meta=dict(epoch=12, iter=trained_iters), state_dict={}), checkpoint)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(checkpoint)


def test_equal_compute_counts_the_iterations_trained_not_the_last_logged(tmp_path):
    """372 iterations trained, the last logged at 370 (logging every 10): the equal-compute
    length is 372 x the time ratio. Counting from the log gave 462 instead of 465."""
    from repre_mm.benchmarks.runs import equal_compute_iters, trained_iterations
    base, repre = str(tmp_path / 'baseline_seed0'), str(tmp_path / 'repre_seed0')
    fake_run(base, 0.10, 370, 372)
    fake_run(repre, 0.125, 370, 372)
    assert trained_iterations(base) == 372
    iters, ratio = equal_compute_iters([base], [repre])
    assert ratio == pytest.approx(1.25) and iters == 465


def job(tmp_path, name, code):
    from repre_mm.benchmarks.runs import Job
    return Job(name, str(tmp_path / name), lambda: [sys.executable, '-c', code])


def test_jobs_are_reported_in_the_order_asked_not_the_order_they_finish(tmp_path):
    from repre_mm.benchmarks.runs import run_jobs
    jobs = [job(tmp_path, 'slow', 'import time; time.sleep(2)'),
            job(tmp_path, 'fast', 'pass')]
    walls = run_jobs(jobs, str(tmp_path), parallel=2)
    assert list(walls) == ['slow', 'fast'] and walls['slow'] > walls['fast'] > 0


def test_a_job_waits_for_those_it_names_while_later_jobs_take_the_cores(tmp_path):
    """The equal-compute baseline waits for the runs it is timed against; a run queued after
    it (a variant) starts on the free core meanwhile instead of leaving it idle."""
    from repre_mm.benchmarks.runs import Job, run_jobs

    def timed(name, seconds, after=()):
        code = (f'import time; t0 = time.time(); time.sleep({seconds}); '
                f'open({str(tmp_path / name)!r}, "w").write(f"{{t0}} {{time.time()}}")')
        return Job(name, str(tmp_path / 'work' / name), lambda: [sys.executable, '-c', code],
                   after=after)

    run_jobs([timed('timed_against', 3), timed('equal_compute', 0, after=['timed_against']),
              timed('variant', 0)], str(tmp_path), parallel=2)
    start, end = {}, {}
    for name in ('timed_against', 'equal_compute', 'variant'):
        start[name], end[name] = map(float, (tmp_path / name).read_text().split())
    assert start['variant'] < end['timed_against'] <= start['equal_compute']
    with pytest.raises(ValueError, match=r"job b waits for \['c'\], which are not jobs listed "
                       r'before it'):
        run_jobs([timed('b', 0, after=['c']), timed('c', 0)], str(tmp_path))


def test_equal_compute_runs_wait_for_the_runs_they_are_timed_against(tmp_path):
    from repre_mm.benchmarks.pretrain import EQUAL_COMPUTE, pretrain_jobs
    jobs = pretrain_jobs(str(tmp_path), [
        ('baseline', 0, None), ('repre', 0, None), ('baseline', 1, None), ('repre', 1, None),
        (EQUAL_COMPUTE, 0, lambda: 10), ('repre_lambda05', 0, None)], write_config=None)
    waits = {job.name: list(job.after) for job in jobs}
    assert waits['baseline_equal_compute_seed0'] == [
        'baseline_seed0', 'repre_seed0', 'baseline_seed1', 'repre_seed1']
    assert waits['repre_lambda05_seed0'] == [] and waits['repre_seed1'] == []


@pytest.mark.parametrize('framework', ['mocov3', 'dino'])
def test_every_variant_changes_what_it_says_and_nothing_else(framework):
    """Each RePre variant of --methods differs from the shipped RePre config in the one setting
    VARIANTS names (the study and seg_transfer pick them by name)."""
    from mmengine.config import Config
    from repre_mm.benchmarks.pretrain import VARIANTS, pretrain_config

    def flat(cfg, prefix=''):  # {'model.rec_head.loss_weight': 1.0, ...}, lists as tuples
        out = {}
        for key, value in cfg.items():
            if isinstance(value, dict) and value:
                out.update(flat(value, f'{prefix}{key}.'))
            else:
                out[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
        return out

    shipped = flat(pretrain_config(framework, 'repre', 0, 2, 8).to_dict())
    depth = pretrain_config(framework, 'repre', 0, 2, 8).model.framework.backbone.arch.num_layers
    loss = ('model.framework.head.loss.loss_weight' if framework == 'mocov3'
            else 'model.framework.head.loss_weight')
    expected = dict(
        repre_last_level={'model.levels': (depth - 1, )},
        repre_shallow_levels={'model.levels': tuple(range(depth // 2))},
        repre_lambda025={'model.rec_head.loss_weight': 0.25},
        repre_lambda05={'model.rec_head.loss_weight': 0.5},
        repre_lambda2={'model.rec_head.loss_weight': 2.0},
        repre_norm_pix={'model.rec_head.norm_pix': True},
        repre_wide_decoder={'model.decoder.base_width':
                            4 * shipped.get('model.decoder.base_width', 128)},
        repre_bilinear={'model.decoder.upsample': 'bilinear'},
        reconstruction_only={loss: 0.0})
    assert set(expected) == set(VARIANTS) - {'repre'}
    for method, change in expected.items():
        cfg = pretrain_config(framework, method, 0, 2, 8)
        assert isinstance(cfg, Config)
        variant = flat(cfg.to_dict())
        differs = {k for k in set(shipped) | set(variant) if shipped.get(k) != variant.get(k)}
        assert differs == set(change), (method, differs)
        assert {k: variant[k] for k in change} == change, method


def test_a_failed_job_stops_the_others(tmp_path):
    """One job fails: the benchmark stops, and the job still running is ended with it instead
    of keeping a core busy."""
    import time
    from repre_mm.benchmarks.runs import run_jobs
    pid_file = tmp_path / 'pid'
    jobs = [job(tmp_path, 'long', f'import os, time; open({str(pid_file)!r}, "w").write('
                                  f'str(os.getpid())); time.sleep(120)'),
            job(tmp_path, 'broken', 'import time; time.sleep(1); raise SystemExit(3)'),
            job(tmp_path, 'never', 'pass')]
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r'broken failed \(exit 3\); see .*broken\.log'):
        run_jobs(jobs, str(tmp_path), parallel=2)
    assert time.time() - t0 < 30
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the long job is gone
    assert not (tmp_path / 'never.log').exists()


def test_paired_stats_verdicts():
    from repre_mm.benchmarks.stats import paired_stats
    assert paired_stats([1.0, 1.2, 0.9])['verdict'] == 'better'
    assert paired_stats([-1.0, -1.2, -0.9])['verdict'] == 'worse'
    mixed = paired_stats([2.5, -0.5, -1.0])
    assert mixed['verdict'] == 'no measurable difference'
    # Student t with 2 degrees of freedom: 4.303 * sd / sqrt(3)
    half = 4.302652729911275 * np.std([2.5, -0.5, -1.0], ddof=1) / np.sqrt(3)
    assert mixed['ci'] == pytest.approx([1 / 3 - half, 1 / 3 + half], rel=1e-4)
    assert paired_stats([1.0])['ci'] is None
    # the same difference on every seed: no interval, and no verdict of better or worse
    same = paired_stats([7.0, 7.0, 7.0])
    assert same['ci'] is None and same['mean'] == 7.0
    assert same['verdict'] == 'no spread over 3 seeds: interval not estimable'


# t(0.975, df) from scipy.stats.t.ppf, written out: the table must match it to 3 decimals
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 10: 2.2281,
        19: 2.0930, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799}


def test_t_values_match_scipy_and_need_no_scipy():
    from repre_mm.benchmarks.stats import t_quantile_95
    for df, t in T975.items():
        assert t_quantile_95(df) == pytest.approx(t, abs=6e-4), df
    assert t_quantile_95(35) >= T975[40]  # between rows: the wider interval
    with pytest.raises(ValueError, match='2 seeds'):
        t_quantile_95(0)
    # scipy is no runtime requirement of repre-mm: the statistics work where it is missing
    # (the module file alone: mmseg, which needs scipy, is imported by the package)
    code = ('import sys, importlib.util as u; sys.modules["scipy"] = None; '
            'spec = u.spec_from_file_location("stats", "repre_mm/benchmarks/stats.py"); '
            'stats = u.module_from_spec(spec); spec.loader.exec_module(stats); '
            'print(stats.paired_stats([1.0, 2.0, 1.5])["verdict"])')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert out.returncode == 0 and out.stdout.strip() == 'better', out.stderr[-2000:]


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
