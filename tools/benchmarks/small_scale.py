"""Does adding RePre make the features better? A small, honest answer on 2 CPU cores.

Pre-trains a framework (MoCo v3 or DINO, tiny ViT) with and without RePre under identical data,
augmentations, seeds and step counts, two runs at a time with one thread each, then scores every
frozen encoder on:
  - image level: k-NN top-1 (CLS and mean patch token), linear-probe top-1;
  - pixel level (RePre's claim): a dense linear probe of the patch tokens on mosaics of test
    items (mIoU, pixel accuracy; final norm and a middle block), see
    repre_mm/evaluation/dense_probe.py;
  - RePre runs: PSNR of the reconstructions of the test images.
References beside them: raw pixels and the untrained encoder. Comparisons are paired by seed:
mean difference, 95 % Student-t interval over the seeds and a verdict. ``baseline_equal_compute``
trains the baseline for as many more iterations as RePre's measured extra time buys.

    python tools/benchmarks/small_scale.py                 # default (3 seeds, ~30 min, 2 cores)
    python tools/benchmarks/small_scale.py --quick         # < 3 min, for tests
    python tools/benchmarks/small_scale.py --data PATH     # any ImageFolder PATH/{train,test}/<class>/*

Writes <out>/results.json, <out>/results.md and <out>/reconstructions.png; each run's exact
config under <out>/configs/ (an ordinary mmpretrain config: tools/train.py trains it as it is).
A run whose checkpoint exists with an identical config is reused, not trained again, and its
scores (<run>/scores.json, keyed by the checkpoint and the evaluation settings) are not computed
again.
"""
import argparse
import hashlib
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import mmcv  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from repre_mm.apis import init_model  # noqa: E402
from repre_mm.datasets import (inspect_image_folder, load_fashion_mnist,  # noqa: E402
                               load_image_folder, write_image_folder)
from repre_mm.evaluation import (DenseProbe, features_from_dataloader,  # noqa: E402
                                 knn_accuracy, linear_probe_accuracy)
from repre_mm.evaluation.dense_probe import FINAL, default_block  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402
from repre_mm.visualization.reconstruction import (reconstruct,  # noqa: E402
                                                   reconstruction_grid, to_pixels)

FRAMEWORKS = dict(
    mocov3=dict(
        baseline='configs/baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
        repre='configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
        contrastive_off={'model.framework.head.loss.loss_weight': 0.0}),
    dino=dict(
        baseline='configs/baselines/dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
        repre='configs/repre/repre_dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
        contrastive_off={'model.framework.head.loss_weight': 0.0}),
)
# RePre variants: what each changes in the shipped RePre config.
VARIANTS = {
    'repre': 'the shipped RePre config',
    'repre_last_level': 'reconstruct from the last block only',
    'repre_shallow_levels': 'levels from the shallower half of the blocks only',
    'repre_lambda025': 'loss weight 0.25',
    'repre_lambda05': 'loss weight 0.5',
    'repre_lambda2': 'loss weight 2',
    'repre_norm_pix': 'per-patch normalised target (norm_pix=True)',
    'repre_wide_decoder': 'decoder 4x wider (base_width x 4)',
    'repre_bilinear': "upsample='bilinear'",
    'reconstruction_only': 'contrastive loss weight 0: reconstruction alone',
}
METHODS = ('baseline', 'baseline_equal_compute') + tuple(VARIANTS)
METRICS = ('knn_cls', 'knn_patch_mean', 'linear_cls', 'dense_miou', 'dense_miou_mid',
           'dense_pixel_acc')
WALL_FILE = 'train_wall_s.json'  # a finished run's wall clock, kept for when it is reused
SCORES_FILE = 'scores.json'  # a run's evaluation with the key it was computed under
# bump when the evaluation code changes what it measures: stored scores then no longer match
EVALUATION_VERSION = 1
METRIC_NAMES = dict(knn_cls='k-NN CLS', knn_patch_mean='k-NN mean patch', linear_cls='linear CLS',
                    dense_miou='dense mIoU (final)', dense_miou_mid='dense mIoU (mid block)',
                    dense_pixel_acc='dense pixel acc (final)')

def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny run for tests (< 3 min)')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-per-class', type=int, default=200,
                        help='pre-training images (and k-NN bank) per class')
    parser.add_argument('--test-per-class', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--framework', default='mocov3', choices=list(FRAMEWORKS))
    parser.add_argument('--methods', nargs='+', choices=METHODS,
                        help='default: baseline, repre and (MoCo v3) baseline_equal_compute')
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (1 thread each)')
    parser.add_argument('--data', help='an ImageFolder PATH/train/<class>/*, PATH/test/<class>/*'
                        ' (JPEG or PNG, RGB or grey) instead of Fashion-MNIST')
    parser.add_argument('--source', default='/usr/share/datasets/fashion-mnist',
                        help='Fashion-MNIST idx files (else the shipped subset is used)')
    parser.add_argument('--dense-mosaics', type=int, nargs=2, default=(400, 200),
                        metavar=('TRAIN', 'TEST'), help='dense-probe mosaics per split')
    parser.add_argument('--out', default='work_dirs/small_scale')
    return parser


def parse_args(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if '--quick' in argv:  # smaller defaults; options given explicitly still win
        parser.set_defaults(seeds=2, epochs=2, batch_size=32, train_per_class=24,
                            test_per_class=10, dense_mosaics=(60, 30))
    args = parser.parse_args(argv)
    if args.methods is None:
        args.methods = ['baseline', 'repre'] + (['baseline_equal_compute']
                                                if args.framework == 'mocov3' else [])
    if args.framework == 'dino' and 'baseline_equal_compute' in args.methods:
        # an iteration-based run never advances the epoch that DINO's hooks read
        parser.error('baseline_equal_compute is MoCo v3 only: DINOTeacherTempHook counts '
                     'epochs, which an iteration-based run does not advance.')
    return args


# --- data ------------------------------------------------------------------------------------
def prepare_data(args) -> dict:
    """The data root and what the configs and probes take from it."""
    if args.data:
        info = inspect_image_folder(args.data)
        print(f'[data] {args.data}: {info.num_train} train / {info.num_test} test images, '
              f'{len(info.classes)} classes, {"colour" if info.colour else "grey"}, trained at '
              f'{info.img_size}x{info.img_size}, patch {info.patch}, mean {info.mean}, '
              f'std {info.std}')
        return dict(root=args.data, info=info, labels_from='box')
    root = osp.join(args.out, 'data')
    data, source = load_fashion_mnist(args.source)
    print(f'[data] {source}')
    for split, n in (('train', args.train_per_class), ('test', args.test_per_class)):
        counts = write_image_folder(osp.join(root, split), *data[split], per_class=n)
        if min(counts.values()) < n:
            print(f'[data] {split}: only {min(counts.values())} images for some class')
    # items on a black background: the item's own pixels are its label in the mosaics
    return dict(root=root, info=None, labels_from='mask')


def views_for(info, size):
    """MoCo-v3-style view augmentations that follow the data: colour jitter and grayscale for
    colour data, brightness / contrast only for grey."""
    crop = dict(type='RandomResizedCrop', scale=size, crop_ratio_range=(0.2, 1.),
                backend='pillow')
    if not info.colour:
        return [dict(crop, crop_ratio_range=(0.3, 1.)),
                dict(type='RandomApply', prob=0.8,
                     transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)]),
                dict(type='RandomFlip', prob=0.5)]
    return [crop,
            dict(type='RandomApply', prob=0.8, transforms=[
                dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)]),
            dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
                 channel_weights=(0.114, 0.587, 0.299)),
            dict(type='RandomFlip', prob=0.5)]


def adapt_to_folder(cfg, info, backbone):
    """Image size, patch, statistics and augmentations of ``cfg`` from the ImageFolder."""
    size = info.img_size
    cfg.data_preprocessor.update(mean=info.mean, std=info.std)
    backbone.update(img_size=size, patch_size=info.patch)
    load = dict(type='LoadImageOrSkip')
    resize = [] if info.same_size else [dict(type='Resize', scale=(size, size))]
    train = cfg.train_dataloader.dataset.pipeline
    multiview = next(t for t in train if t.type == 'MultiView')
    if len(multiview.transforms) == 1:  # MoCo v3: two views of one kind
        multiview.transforms = [views_for(info, size)]
    else:  # DINO: global + local crops, the local side scaled as 12 / 28 of the global one
        local = max(info.patch * 2, round(size * 12 / 28 / info.patch) * info.patch)
        global_views, local_views = views_for(info, size), views_for(info, local)
        global_views[0]['crop_ratio_range'] = (0.4, 1.)
        local_views[0]['crop_ratio_range'] = (0.1, 0.4)
        multiview.transforms = [global_views, local_views]
    cfg.train_dataloader.dataset.pipeline = [load] + resize + [multiview, dict(type='PackInputs')]
    for key in ('knn_bank_dataloader', 'knn_query_dataloader'):
        cfg[key].dataset.pipeline = [load] + resize + [dict(type='PackInputs')]


def write_run_config(args, data, method, seed, iters=None) -> str:
    """The shipped config of ``method`` with this benchmark's data, length and seed, written
    under <out>/configs/ (k-NN is evaluated here after training, so the hook is dropped).
    ``iters``: train for that many iterations instead of ``args.epochs`` epochs."""
    spec = FRAMEWORKS[args.framework]
    is_baseline = method.startswith('baseline')
    cfg = Config.fromfile(osp.join(ROOT, spec['baseline' if is_baseline else 'repre']))
    if not is_baseline:
        depth = cfg.model.framework.backbone.arch.num_layers
        if method == 'repre_last_level':
            cfg.model.levels = (depth - 1, )
        elif method == 'repre_shallow_levels':
            cfg.model.levels = tuple(range(depth // 2))
        elif method.startswith('repre_lambda'):
            weight = dict(repre_lambda025=0.25, repre_lambda05=0.5, repre_lambda2=2.0)[method]
            cfg.model.rec_head.loss_weight = weight
        elif method == 'repre_norm_pix':
            cfg.model.rec_head.norm_pix = True
        elif method == 'repre_wide_decoder':
            cfg.model.decoder.base_width = cfg.model.decoder.get('base_width', 128) * 4
        elif method == 'repre_bilinear':
            cfg.model.decoder.upsample = 'bilinear'
        elif method == 'reconstruction_only':
            cfg.merge_from_dict(spec['contrastive_off'])
    if data['info'] is not None:
        backbone = cfg.model.backbone if is_baseline else cfg.model.framework.backbone
        adapt_to_folder(cfg, data['info'], backbone)
    for key in ('train_dataloader', 'knn_bank_dataloader', 'knn_query_dataloader'):
        cfg[key].dataset.data_root = data['root']
    cfg.train_dataloader.update(batch_size=args.batch_size, num_workers=0,
                                persistent_workers=False)
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNEvaluationHook']
    cfg.default_hooks.logger.interval = 1 if args.quick else 10
    warmup = max(args.epochs / 10, 0.5)  # 10% of the run, at least half an epoch
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'LinearLR':
            scheduler.end = warmup
        elif scheduler.type == 'CosineAnnealingLR':
            scheduler.update(begin=warmup, T_max=args.epochs - warmup, end=args.epochs)
        else:
            scheduler.update(T_max=args.epochs, end=args.epochs)
    if iters is None:
        cfg.train_cfg.max_epochs = args.epochs
        cfg.default_hooks.checkpoint.interval = args.epochs
    else:  # the same schedule shape, stretched over ``iters`` iterations
        scale = iters / args.epochs
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters)
        cfg.default_hooks.checkpoint.update(interval=iters, by_epoch=False)
        cfg.log_processor = dict(cfg.get('log_processor', {}), by_epoch=False)
        for scheduler in cfg.param_scheduler:
            scheduler.update(by_epoch=False, convert_to_iter_based=False)
            for key in ('begin', 'end', 'T_max'):
                if key in scheduler:
                    scheduler[key] = round(scheduler[key] * scale)
    path = osp.join(args.out, 'configs', f'{method}_seed{seed}.py')
    os.makedirs(osp.dirname(path), exist_ok=True)
    cfg.dump(path)
    return path


def checkpoint_of(work_dir):
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(last):
        return None
    with open(last) as f:
        path = f.read().strip()
    return path if osp.exists(path) else None


# --- training --------------------------------------------------------------------------------
def train_all(args, runs, data):
    """Runs every (method, seed, iters) as tools/train.py, ``args.jobs`` at a time, one thread
    each; ``iters`` may be a function, called when the run starts (it can depend on runs that
    finished before). A run whose checkpoint exists with the same config is reused. Returns
    {(method, seed): wall seconds} in the order of ``runs`` (a reused run's own wall clock, None
    if it was not recorded)."""
    queue, running, done = list(runs), {}, {}
    order = [(method, seed) for method, seed, _ in runs]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    start, last_report = time.time(), 0.0
    while queue or running:
        while queue and len(running) < args.jobs:
            method, seed, iters = queue.pop(0)
            iters = iters() if callable(iters) else iters
            work_dir = osp.join(args.out, f'{method}_seed{seed}')
            config = osp.join(args.out, 'configs', f'{method}_seed{seed}.py')
            previous = open(config).read() if osp.exists(config) else None
            write_run_config(args, data, method, seed, iters)
            if previous == open(config).read() and checkpoint_of(work_dir):
                print(f'[train] reusing {method} seed {seed} ({checkpoint_of(work_dir)})')
                done[(method, seed)] = _read_json(osp.join(work_dir, WALL_FILE), {}).get('wall_s')
                continue
            log = open(osp.join(args.out, f'{method}_seed{seed}.log'), 'w')
            cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir',
                   work_dir]
            running[(method, seed)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                        env=env), time.time(), log,
                                       total_iterations(args, data, iters))
            print(f'[train] started {method} seed {seed}')
        for key, (proc, t0, log, _) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                if proc.returncode != 0:
                    raise RuntimeError(f'{key[0]} seed {key[1]} failed; see {log.name}')
                done[key] = time.time() - t0
                with open(osp.join(args.out, f'{key[0]}_seed{key[1]}', WALL_FILE), 'w') as f:
                    json.dump(dict(wall_s=done[key]), f)
                del running[key]
                print(f'[train] finished {key[0]} seed {key[1]} in {done[key]:.0f} s '
                      f'({len(done)}/{len(done) + len(running) + len(queue)})')
        if time.time() - last_report > 30 and running:
            last_report = time.time()
            timed = [w for w in done.values() if w]
            print(f'[train] {time.time() - start:.0f} s elapsed; ' + '; '.join(
                f'{m} seed {s}: {_progress(osp.join(args.out, f"{m}_seed{s}"), total)}'
                for (m, s), (_, _, _, total) in running.items())
                + (f'; ETA {_eta(timed, running, queue, args.jobs):.0f} s' if timed else ''))
        time.sleep(1)
    return {key: done[key] for key in order}  # in the order asked, not of finishing: stable tables


def _read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default


def _progress(work_dir, total):
    """'iteration i/total, eta' from the scalars mmengine logs to vis_data/scalars.json."""
    try:
        records = train_records(work_dir)
    except (FileNotFoundError, ValueError):
        records = []
    if not records:
        return 'starting'
    done = records[-1]['iter']
    eta = statistics.median(r['time'] for r in records[-10:]) * max(total - done, 0)
    return f'iteration {done}/{total}, eta {eta / 60:.1f} min'


def total_iterations(args, data, iters):
    """A run's iterations: ``iters``, or its epochs x full batches of the training set."""
    if iters is not None:
        return iters
    num = data['info'].num_train if data['info'] else args.train_per_class * 10
    return args.epochs * (num // args.batch_size)


def _eta(timed, running, queue, jobs):
    per_run = statistics.mean(timed)
    left = len(queue) * per_run + sum(max(per_run - (time.time() - t0), 0)
                                      for _, t0, _, _ in running.values())
    return left / jobs


def train_records(work_dir):
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    for run in reversed(runs):  # the newest run that logged scalars
        path = osp.join(work_dir, run, 'vis_data', 'scalars.json')
        if osp.exists(path):
            with open(path) as f:
                return [r for r in map(json.loads, f) if 'loss' in r]
    raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}.')


def iteration_time(args, method, seed):
    return statistics.median(r['time'] for r in train_records(
        osp.join(args.out, f'{method}_seed{seed}')))


def equal_compute_iters(args, seeds):
    """Iterations the baseline gets for RePre's wall clock: its epochs' iterations x the
    measured time ratio RePre / baseline per iteration (median over the seeds)."""
    ratios = [iteration_time(args, 'repre', s) / iteration_time(args, 'baseline', s)
              for s in seeds]
    ratio = statistics.median(ratios)
    iters = train_records(osp.join(args.out, f'baseline_seed{seeds[0]}'))[-1]['iter']
    return max(iters, round(iters * ratio)), ratio


def plan_runs(args, methods, seeds, data):
    """Trains ``methods`` x ``seeds``; ``baseline_equal_compute`` after the baseline and RePre
    runs it is timed against."""
    first = [m for m in methods if m != 'baseline_equal_compute']
    walls = train_all(args, [(m, s, None) for s in seeds for m in first], data)
    info = {}
    if 'baseline_equal_compute' in methods:
        iters, ratio = equal_compute_iters(args, seeds)
        info = dict(time_ratio=ratio, iters=iters)
        print(f'[train] RePre / baseline time per iteration: {ratio:.3f}; the equal-compute '
              f'baseline trains {iters} iterations')
        walls.update(train_all(args, [('baseline_equal_compute', s, iters) for s in seeds],
                               data))
    return walls, info


# --- evaluation ------------------------------------------------------------------------------
def build_model(config_path, checkpoint=None, seed=0):
    """(model, config) of a run; ``seed`` draws the initial weights of an untrained one."""
    cfg = Config.fromfile(config_path)
    torch.manual_seed(seed)
    return init_model(cfg, checkpoint), cfg


def eval_loaders(cfg, data_root):
    loaders = []
    for key in ('knn_bank_dataloader', 'knn_query_dataloader'):
        loader = cfg[key].copy()
        loader.dataset = dict(loader.dataset, data_root=data_root)
        loader.update(num_workers=0, persistent_workers=False)
        loaders.append(Runner.build_dataloader(loader))
    return loaders


def make_dense_probe(args, data, cfg):
    """Mosaics from the pre-training images (probe training) and the test images (scores)."""
    backbone = cfg.model.get('framework', cfg.model).backbone
    size, patch = backbone.img_size, backbone.patch_size
    per_class = None if args.data else args.train_per_class
    train = load_image_folder(osp.join(data['root'], 'train'), size, per_class)
    test = load_image_folder(osp.join(data['root'], 'test'), size)
    preprocessor = cfg.data_preprocessor
    return DenseProbe(train[:2], test[:2], len(train[2]), patch, preprocessor.mean,
                      preprocessor.std, labels_from=data['labels_from'],
                      num_train=args.dense_mosaics[0], num_test=args.dense_mosaics[1])


def evaluate(model, loaders, probe):
    (bank, bank_y), (query, query_y) = (features_from_dataloader(model, loader)
                                        for loader in loaders)
    backbone = model.backbone
    final = probe.score_encoder(backbone, FINAL)
    mid = probe.score_encoder(backbone, default_block(backbone))
    return dict(
        knn_cls=knn_accuracy(bank['cls'], bank_y, query['cls'], query_y),
        knn_patch_mean=knn_accuracy(bank['patch_mean'], bank_y, query['patch_mean'], query_y),
        linear_cls=linear_probe_accuracy(bank['cls'], bank_y, query['cls'], query_y),
        dense_miou=final['miou'], dense_pixel_acc=final['pixel_acc'],
        dense_miou_mid=mid['miou'])


def raw_pixel_knn(loaders, model):
    def pixels(loader):
        xs, ys = [], []
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            xs.append(data['inputs'].flatten(1))  # every channel
            ys.extend(int(s.gt_label) for s in data['data_samples'])
        return torch.cat(xs), torch.tensor(ys)

    (bank, bank_y), (query, query_y) = pixels(loaders[0]), pixels(loaders[1])
    return knn_accuracy(bank, bank_y, query, query_y)


def held_out_images(model, loader, num=None, one_per_class=False):
    """Normalised test images (and labels) through the model's preprocessor."""
    images, labels = [], []
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        for image, sample in zip(data['inputs'], data['data_samples']):
            label = int(sample.gt_label)
            if one_per_class and label in labels:
                continue
            images.append(image)
            labels.append(label)
        if num is not None and len(images) >= num:
            break
    return torch.stack(images[:num])


@torch.no_grad()
def reconstruction_psnr(model, images):
    """PSNR (dB, 8-bit pixels) of the reconstructions of ``images``, averaged over images."""
    error = (to_pixels(model, reconstruct(model, images)) - to_pixels(model, images))**2
    mse = error.flatten(1).mean(1).clamp_min(1e-10)
    return (10 * torch.log10(255.0**2 / mse)).mean().item()


@torch.no_grad()
def save_reconstructions(model, images, path):
    """Row 1: test images; row 2: the decoder's reconstructions; row 3: |error| (colour)."""
    mmcv.imwrite(reconstruction_grid(model, images)[..., ::-1], path)


# --- statistics ------------------------------------------------------------------------------
def paired_stats(diffs, level=0.95):
    """Mean of paired differences, its Student-t interval over the seeds and a verdict."""
    from scipy import stats
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return dict(per_seed=diffs, mean=mean, ci=None, verdict='one seed: no interval')
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(
        len(diffs))
    low, high = mean - half, mean + half
    verdict = 'better' if low > 0 else 'worse' if high < 0 else 'no measurable difference'
    return dict(per_seed=diffs, mean=mean, ci=[low, high], verdict=verdict)


def compare(results, method, against):
    """{metric: paired_stats of method - against} over the seeds both have."""
    base = {r['seed']: r for r in results if r['method'] == against}
    runs = [r for r in results if r['method'] == method and r['seed'] in base]
    if not runs:
        return None
    return {m: paired_stats([r[m] - base[r['seed']][m] for r in runs]) for m in METRICS}


def fmt(values):
    return f'{statistics.mean(values):.2f}' + (f' ± {statistics.stdev(values):.2f}'
                                               if len(values) > 1 else '')


def results_table(results, references):
    by_method = {}
    for r in results:
        by_method.setdefault(r['method'], []).append(r)
    lines = ['| method | seeds | ' + ' | '.join(METRIC_NAMES[m] for m in METRICS) +
             ' | rec. PSNR dB | wall s / run | img/s / run |',
             '|---' * (len(METRICS) + 5) + '|']
    for method, runs in by_method.items():
        psnr = [r['psnr'] for r in runs if r.get('psnr') is not None]
        walls = [r['wall_s'] for r in runs if r['wall_s']]
        lines.append(f'| {method} | {len(runs)} | ' + ' | '.join(
            fmt([r[m] for r in runs]) for m in METRICS) +
            f' | {fmt(psnr) if psnr else "-"} | {fmt(walls) if walls else "-"} | '
            f'{statistics.mean(r["images_per_s"] for r in runs):.0f} |')
    untrained = references['untrained']
    lines.append(f'| untrained encoder | {len(untrained)} | ' + ' | '.join(
        fmt([u[m] for u in untrained]) for m in METRICS) + ' | - | - | - |')
    raw = references['raw_pixels']
    lines.append(f'| raw pixels | - | {raw["knn"]:.2f} | - | - | {raw["dense_miou"]:.2f} | - | '
                 f'{raw["dense_pixel_acc"]:.2f} | - | - | - |')
    return lines


def comparison_table(comparisons):
    lines = ['| comparison (paired by seed) | metric | per seed | mean | 95 % interval | verdict |',
             '|---|---|---|---|---|---|']
    for name, diff in comparisons.items():
        for m in METRICS:
            d = diff[m]
            ci = f'[{d["ci"][0]:+.2f}, {d["ci"][1]:+.2f}]' if d['ci'] else '-'
            lines.append(f'| {name} | {METRIC_NAMES[m]} | '
                         f'{" / ".join(f"{v:+.2f}" for v in d["per_seed"])} | {d["mean"]:+.2f} | '
                         f'{ci} | {d["verdict"]} |')
    return lines


def all_comparisons(results):
    methods = list(dict.fromkeys(r['method'] for r in results))
    comparisons = {}
    for method in methods:
        if method.startswith('baseline'):
            continue
        for against in ('baseline', 'baseline_equal_compute'):
            if method == 'repre' or against == 'baseline':
                diff = compare(results, method, against)
                if diff:
                    suffix = ' (equal compute)' if against != 'baseline' else ''
                    comparisons[f'{method} - baseline{suffix}'] = diff
    return comparisons


# --- main ------------------------------------------------------------------------------------
def evaluation_key(args, config, checkpoint=None):
    """What a stored evaluation depends on: the evaluation settings and code version, the
    config's text (it is written anew at every start) and the checkpoint's path, size and
    modification time (a retrained checkpoint changes them)."""
    with open(config, 'rb') as f:
        config_hash = hashlib.sha256(f.read()).hexdigest()
    stat = os.stat(checkpoint) if checkpoint else None
    return dict(version=EVALUATION_VERSION, data=args.data or args.source,
                train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                dense_mosaics=list(args.dense_mosaics), config=config_hash,
                checkpoint=[osp.abspath(checkpoint), stat.st_size, stat.st_mtime_ns]
                if checkpoint else None)


def stored_or_computed(path, key, compute, what):
    """The scores stored at ``path`` under ``key``, else ``compute()`` (then stored): finished
    runs are not evaluated again when a benchmark or study is restarted."""
    stored = _read_json(path, {})
    if stored.get('key') == key:
        print(f'[eval] reusing the stored scores of {what} ({path})')
        return stored['scores']
    scores = compute()
    with open(path, 'w') as f:
        json.dump(dict(key=key, scores=scores), f, indent=2)
    return scores


def evaluate_runs(args, data, walls, framework_cfg):
    """Scores every trained run and the references; returns (results, references, picture)."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print('[eval] k-NN, linear and dense probes on frozen features')
    # models are built only to compute scores that are not stored yet (and the picture)
    cfg = Config.fromfile(framework_cfg)
    loaders = eval_loaders(cfg, data['root'])
    probe = make_dense_probe(args, data, cfg)
    seeds = sorted({s for _, s in walls})

    def score_references():
        models = [build_model(framework_cfg, seed=seed)[0] for seed in seeds]
        untrained = [evaluate(model, loaders, probe) for model in models]
        pixels = probe.score_pixels()
        return dict(untrained=untrained, raw_pixels=dict(
            knn=raw_pixel_knn(loaders, models[0]), dense_miou=pixels['miou'],
            dense_pixel_acc=pixels['pixel_acc']))

    references = stored_or_computed(
        osp.join(args.out, 'references.json'), dict(evaluation_key(args, framework_cfg),
                                                    seeds=seeds),
        score_references, 'the references')
    results, picture = [], None
    for (method, seed), wall in walls.items():
        work_dir = osp.join(args.out, f'{method}_seed{seed}')
        config = osp.join(args.out, 'configs', f'{method}_seed{seed}.py')
        checkpoint = checkpoint_of(work_dir)
        run_cfg, built = Config.fromfile(config), []

        def trained_model():
            if not built:
                built.append(build_model(config, checkpoint)[0])
            return built[0]

        def score_run():
            model = trained_model()
            scores = dict(evaluate(model, loaders, probe), psnr=None)
            if not method.startswith('baseline'):
                scores['psnr'] = reconstruction_psnr(model, held_out_images(model, loaders[1],
                                                                            num=200))
            return scores

        scores = stored_or_computed(osp.join(work_dir, SCORES_FILE),
                                    evaluation_key(args, config, checkpoint), score_run,
                                    f'{method} seed {seed}')
        if method == 'repre' and picture is None:
            picture, model = osp.join(args.out, 'reconstructions.png'), trained_model()
            save_reconstructions(model, held_out_images(model, loaders[1], num=10,
                                                        one_per_class=True), picture)
        records = train_records(work_dir)
        loss_key = 'loss' if method.startswith('baseline') else 'loss_rec'
        iter_time = statistics.median(r['time'] for r in records)
        result = dict(method=method, seed=seed, **scores, wall_s=wall,
                      images_per_s=run_cfg.train_dataloader.batch_size / iter_time,
                      iter_time_s=iter_time, loss_key=loss_key,
                      # means of the first and the last three logged values
                      loss_first=statistics.mean(r[loss_key] for r in records[:3]),
                      loss_last=statistics.mean(r[loss_key] for r in records[-3:]),
                      iterations=records[-1]['iter'])
        results.append(result)
        print(f'[eval] {method} seed {seed}: ' + ', '.join(
            f'{METRIC_NAMES[m]} {result[m]:.2f}' for m in METRICS) +
            (f', PSNR {result["psnr"]:.2f} dB' if result['psnr'] is not None else ''))
    return results, references, picture


def describe(args, data):
    if data['info'] is None:
        what = (f'Fashion-MNIST ({args.train_per_class * 10} training images, '
                f'{args.test_per_class * 10} test images), tiny ViT (d128, 6 blocks, patch 4)')
    else:
        info = data['info']
        what = (f'{args.data} ({info.num_train} training / {info.num_test} test images, '
                f'{"colour" if info.colour else "grey"}, {info.img_size}px), tiny ViT '
                f'(d128, 6 blocks, patch {info.patch})')
    return (f'{args.framework}, {what}, {args.epochs} epochs, batch {args.batch_size}. k-NN: k=20, '
            f'T=0.07, bank = the pre-training images; dense probe: linear 1x1 head on frozen '
            f'patch tokens, {args.dense_mosaics[0]} / {args.dense_mosaics[1]} train / test '
            f'mosaics of 2x2 items, mIoU over the classes + background.')


def write_summary(args, data, results, references, picture, extra, t_start):
    comparisons = all_comparisons(results)
    lines = [describe(args, data), ''] + results_table(results, references) + [''] + \
        comparison_table(comparisons)
    summary = dict(settings=vars(args), data_info=data['info'].__dict__ if data['info'] else None,
                   results=results, references=references, paired=comparisons,
                   total_wall_s=time.time() - t_start, picture=picture, torch=torch.__version__,
                   threads_per_run=1, **extra)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n' + '\n'.join(lines) + '\n')
    return summary


def headline(summary):
    """One JSON line: per method the mean of every metric, and the paired differences."""
    by_method = {}
    for r in summary['results']:
        by_method.setdefault(r['method'], []).append(r)
    return json.dumps(dict(
        methods={m: {k: round(statistics.mean(r[k] for r in runs), 2) for k in METRICS}
                 for m, runs in by_method.items()},
        paired={name: {k: dict(mean=round(d['mean'], 2),
                               ci=[round(v, 2) for v in d['ci']] if d['ci'] else None,
                               verdict=d['verdict']) for k, d in diff.items()}
                for name, diff in summary['paired'].items()}))


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file at once
    args = parse_args(argv)
    quiet_mmengine()
    init_default_scope('mmpretrain')  # dataloaders are built outside a Runner
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    data = prepare_data(args)
    per_epoch = total_iterations(args, data, None) // args.epochs
    if per_epoch < 2:  # the warm-up (a tenth of the run, at least half an epoch) needs 1 step
        raise SystemExit(f'{per_epoch} batch(es) of {args.batch_size} per epoch: too few for the '
                         f'learning-rate warm-up; pass a smaller --batch-size.')
    walls, extra = plan_runs(args, args.methods, list(range(args.seeds)), data)
    # the untrained-encoder reference and the evaluation loaders come from the first method
    first = next(m for m in args.methods if m != 'baseline_equal_compute')
    results, references, picture = evaluate_runs(
        args, data, walls, osp.join(args.out, 'configs', f'{first}_seed0.py'))
    summary = write_summary(args, data, results, references, picture,
                            dict(equal_compute=extra), t_start)
    print(headline(summary))
    print(f'total {summary["total_wall_s"]:.0f} s; JSON {osp.join(args.out, "results.json")}; '
          f'reconstructions {picture}')


if __name__ == '__main__':
    main()
