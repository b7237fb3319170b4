"""The small-scale pre-training benchmark (tools/benchmarks/small_scale.py): image-level
k-NN / linear probes and the mosaic dense probe of frozen encoders, RePre vs its base.

The runs, statistics and data adaptation are the shared benchmark core of this package
(``runs``, ``stats``, ``pretrain``); this module holds what is specific to this benchmark: its
data (Fashion-MNIST or an ImageFolder) and its evaluation.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import statistics
import sys
import time

import mmcv
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from ..apis import init_model
from ..datasets import (inspect_image_folder, load_fashion_mnist, load_image_folder,
                        write_image_folder)
from ..evaluation import (DenseProbe, features_from_dataloader, knn_accuracy,
                          linear_probe_accuracy)
from ..evaluation.dense_probe import FINAL, default_block
from ..utils.logging import quiet_mmengine
from ..visualization.reconstruction import reconstruct, reconstruction_grid, to_pixels
from .pretrain import (EQUAL_COMPUTE, FRAMEWORKS, METHODS, ViewSpec, dump_config,
                       plan_pretraining, pretrain_config, run_name)
from .runs import (checkpoint_of, file_key, stored_or_computed, train_records,
                   trained_iterations)
from .stats import compare, comparison_table, fmt

METRICS = ('knn_cls', 'knn_patch_mean', 'linear_cls', 'dense_miou', 'dense_miou_mid',
           'dense_pixel_acc')
# The mosaic dense probe cannot tell a trained encoder from an untrained one at this size
# (17.5 vs 18.0 mIoU on Fashion-MNIST: ~78 % of the pixels are background). Its scores stay in
# the tables as a diagnostic; the headline and the study's choices use the image-level metrics.
HEADLINE_METRICS = ('knn_cls', 'knn_patch_mean', 'linear_cls')
SCORES_FILE = 'scores.json'  # a run's evaluation with the key it was computed under
# bump when the evaluation code changes what it measures: stored scores then no longer match
EVALUATION_VERSION = 1
METRIC_NAMES = dict(knn_cls='k-NN CLS', knn_patch_mean='k-NN mean patch', linear_cls='linear CLS',
                    dense_miou='mosaic mIoU (final)', dense_miou_mid='mosaic mIoU (mid block)',
                    dense_pixel_acc='mosaic pixel acc (final)')
DOC = __doc__


def build_parser():
    parser = argparse.ArgumentParser(description=DOC.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny run for tests (< 3 min)')
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--epochs', type=int, default=6)
    parser.add_argument('--train-per-class', type=int, default=200,
                        help='pre-training images (and k-NN bank) per class')
    parser.add_argument('--test-per-class', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--framework', default='mocov3', choices=list(FRAMEWORKS))
    parser.add_argument('--methods', nargs='+', choices=METHODS,
                        help='default: baseline, repre and baseline_equal_compute')
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
        args.methods = ['baseline', 'repre', EQUAL_COMPUTE]
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


def view_spec(info) -> ViewSpec:
    """The pre-training views of an ImageFolder (see inspect_image_folder)."""
    return ViewSpec(img_size=info.img_size, patch=info.patch, mean=info.mean, std=info.std,
                    colour=info.colour, resize=not info.same_size)


def write_run_config(args, data, method, seed, iters=None) -> str:
    """The shipped config of ``method`` with this benchmark's data, length and seed, written
    under <out>/configs/ (k-NN is evaluated here after training, so the hook is dropped).
    ``iters``: train for that many iterations instead of ``args.epochs`` epochs."""
    spec = view_spec(data['info']) if data['info'] is not None else None
    cfg = pretrain_config(args.framework, method, seed, args.epochs, args.batch_size, spec,
                          iters, log_interval=1 if args.quick else 10)
    for key in ('train_dataloader', 'knn_bank_dataloader', 'knn_query_dataloader'):
        cfg[key].dataset.data_root = data['root']
    return dump_config(cfg, osp.join(args.out, 'configs', f'{run_name(method, seed)}.py'))


# --- training --------------------------------------------------------------------------------
def total_iterations(args, data, iters):
    """A run's iterations: ``iters``, or its epochs x full batches of the training set."""
    if iters is not None:
        return iters
    num = data['info'].num_train if data['info'] else args.train_per_class * 10
    return args.epochs * (num // args.batch_size)


def plan_runs(args, methods, seeds, data):
    """Trains ``methods`` x ``seeds``, ``args.jobs`` at a time; the equal-compute baseline after
    the baseline and RePre runs it is timed against."""
    return plan_pretraining(
        args.out, methods, seeds, lambda m, s, iters: write_run_config(args, data, m, s, iters),
        args.jobs, lambda iters: total_iterations(args, data, iters))


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


def all_comparisons(results):
    methods = list(dict.fromkeys(r['method'] for r in results))
    comparisons = {}
    for method in methods:
        if method.startswith('baseline'):
            continue
        for against in ('baseline', 'baseline_equal_compute'):
            if method == 'repre' or against == 'baseline':
                diff = compare(results, method, against, METRICS)
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
    return dict(version=EVALUATION_VERSION, data=args.data or args.source,
                train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                dense_mosaics=list(args.dense_mosaics), config=config_hash,
                checkpoint=file_key(checkpoint) if checkpoint else None)


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
        result = dict(method=method, seed=seed, **scores, wall_s=wall,
                      **training_figures(work_dir, method, run_cfg.train_dataloader.batch_size))
        results.append(result)
        print(f'[eval] {method} seed {seed}: ' + ', '.join(
            f'{METRIC_NAMES[m]} {result[m]:.2f}' for m in METRICS) +
            (f', PSNR {result["psnr"]:.2f} dB' if result['psnr'] is not None else ''))
    return results, references, picture


def training_figures(work_dir: str, method: str, batch_size: int) -> dict:
    """Speed, loss and length of a finished run, from its training log and checkpoint."""
    records = train_records(work_dir)
    loss_key = 'loss' if method.startswith('baseline') else 'loss_rec'
    iter_time = statistics.median(r['time'] for r in records)
    return dict(images_per_s=batch_size / iter_time, iter_time_s=iter_time, loss_key=loss_key,
                # means of the first and the last three logged values
                loss_first=statistics.mean(r[loss_key] for r in records[:3]),
                loss_last=statistics.mean(r[loss_key] for r in records[-3:]),
                iterations=trained_iterations(work_dir))


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
        comparison_table(comparisons, METRIC_NAMES)
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
    """One JSON line: per method the mean of every headline metric, and the paired differences
    (the mosaic probe's scores are left out: see HEADLINE_METRICS)."""
    by_method = {}
    for r in summary['results']:
        by_method.setdefault(r['method'], []).append(r)
    return json.dumps(dict(
        methods={m: {k: round(statistics.mean(r[k] for r in runs), 2) for k in HEADLINE_METRICS}
                 for m, runs in by_method.items()},
        paired={name: {k: dict(mean=round(d['mean'], 2),
                               ci=[round(v, 2) for v in d['ci']] if d['ci'] else None,
                               verdict=d['verdict']) for k, d in diff.items()
                       if k in HEADLINE_METRICS}
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
    first = next(m for m in args.methods if m != EQUAL_COMPUTE)
    results, references, picture = evaluate_runs(
        args, data, walls, osp.join(args.out, 'configs', f'{first}_seed0.py'))
    summary = write_summary(args, data, results, references, picture,
                            dict(equal_compute=extra), t_start)
    print(headline(summary))
    print(f'total {summary["total_wall_s"]:.0f} s; JSON {osp.join(args.out, "results.json")}; '
          f'reconstructions {picture}')


if __name__ == '__main__':  # python -m repre_mm.benchmarks.small_scale: from a wheel install too
    main()
