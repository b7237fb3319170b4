"""Does adding RePre make the features better? A small, honest answer on 2 CPU cores.

Pre-trains MoCo v3 (tiny ViT, Fashion-MNIST) with and without RePre under identical data,
augmentations, seeds and step counts, two runs at a time with one thread each, then reports
k-NN top-1 (CLS and mean patch token), linear-probe top-1, wall time and images/s, next to the
references that keep it honest (k-NN on raw pixels, k-NN of the untrained encoder) and the
paired differences RePre - baseline over seeds. Ablations: reconstruction from the last level
only, and reconstruction alone (contrastive loss weight 0).

    python tools/benchmarks/small_scale.py                 # default size (~30 min on 2 cores)
    python tools/benchmarks/small_scale.py --quick         # < 3 min, for tests

Writes <out>/results.json, <out>/results.md and <out>/reconstructions.png.
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmpretrain.registry import MODELS  # noqa: E402
from repre_mm.datasets import load_fashion_mnist, write_image_folder  # noqa: E402
from repre_mm.evaluation import (features_from_dataloader, knn_accuracy,  # noqa: E402
                                 linear_probe_accuracy)
from repre_mm.utils.checkpoint import load_strict, load_weights  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402

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
METHODS = ('baseline', 'repre', 'repre_last_level', 'reconstruction_only')
PROGRESS = re.compile(r'Epoch\(train\)\s+\[(\d+)\]\[\s*(\d+)/(\d+)\].*?eta: ([\d:]+(?: day,)?)')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='tiny run for tests (< 3 min)')
    parser.add_argument('--seeds', type=int, default=2)
    parser.add_argument('--epochs', type=int, default=3)
    parser.add_argument('--train-per-class', type=int, default=600,
                        help='pre-training images (and k-NN bank) per class')
    parser.add_argument('--test-per-class', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--framework', default='mocov3', choices=list(FRAMEWORKS))
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=METHODS)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (1 thread each)')
    parser.add_argument('--source', default='/usr/share/datasets/fashion-mnist',
                        help='Fashion-MNIST idx files (else the shipped subset is used)')
    parser.add_argument('--out', default='work_dirs/small_scale')
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.batch_size = 1, 2, 32
        args.train_per_class, args.test_per_class = 24, 10
        args.methods = ['baseline', 'repre']
    return args


def prepare_data(args) -> str:
    root = osp.join(args.out, 'data')
    data, source = load_fashion_mnist(args.source)
    print(f'[data] {source}')
    for split, n in (('train', args.train_per_class), ('test', args.test_per_class)):
        counts = write_image_folder(osp.join(root, split), *data[split], per_class=n)
        if min(counts.values()) < n:
            print(f'[data] {split}: only {min(counts.values())} images for some class')
    return root


def write_run_config(args, method, seed, data_root) -> str:
    """The shipped config of ``method`` with this benchmark's data, length and seed, written
    under <out>/configs/ (k-NN is evaluated here after training, so the hook is dropped)."""
    spec = FRAMEWORKS[args.framework]
    cfg = Config.fromfile(osp.join(ROOT, spec['baseline' if method == 'baseline' else 'repre']))
    if method == 'repre_last_level':
        cfg.model.levels = (max(cfg.model.levels), )
    if method == 'reconstruction_only':
        cfg.merge_from_dict(spec['contrastive_off'])
    cfg.train_dataloader.dataset.data_root = data_root
    cfg.train_dataloader.update(batch_size=args.batch_size, num_workers=0,
                                persistent_workers=False)
    cfg.train_cfg.max_epochs = args.epochs
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNEvaluationHook']
    cfg.default_hooks.logger.interval = 1 if args.quick else 10
    cfg.default_hooks.checkpoint.interval = args.epochs
    warmup = max(args.epochs / 10, 0.5)  # 10% of the run, at least half an epoch
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'LinearLR':
            scheduler.end = warmup
        elif scheduler.type == 'CosineAnnealingLR':
            scheduler.update(begin=warmup, T_max=args.epochs - warmup, end=args.epochs)
        else:
            scheduler.update(T_max=args.epochs, end=args.epochs)
    path = osp.join(args.out, 'configs', f'{method}_seed{seed}.py')
    os.makedirs(osp.dirname(path), exist_ok=True)
    cfg.dump(path)
    return path


def train_all(args, data_root):
    """Runs every (method, seed) as tools/train.py, ``args.jobs`` at a time, one thread each."""
    queue = [(m, s) for s in range(args.seeds) for m in args.methods]
    running, done = {}, {}
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONUNBUFFERED='1',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    start, last_report = time.time(), 0.0
    while queue or running:
        while queue and len(running) < args.jobs:
            method, seed = queue.pop(0)
            config = write_run_config(args, method, seed, data_root)
            work_dir = osp.join(args.out, f'{method}_seed{seed}')
            log = open(osp.join(args.out, f'{method}_seed{seed}.log'), 'w')
            cmd = [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir',
                   work_dir]
            running[(method, seed)] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                        env=env), time.time(), log)
            print(f'[train] started {method} seed {seed}')
        for key, (proc, t0, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                if proc.returncode != 0:
                    raise RuntimeError(f'{key[0]} seed {key[1]} failed; see {log.name}')
                done[key] = time.time() - t0
                del running[key]
                print(f'[train] finished {key[0]} seed {key[1]} in {done[key]:.0f} s '
                      f'({len(done)}/{len(done) + len(running) + len(queue)})')
        if time.time() - last_report > 30 and running:
            last_report = time.time()
            print(f'[train] {time.time() - start:.0f} s elapsed; ' + '; '.join(
                f'{m} seed {s}: {_progress(log.name)}' for (m, s), (_, _, log) in running.items())
                + (f'; ETA {_eta(done, running, queue, args.jobs):.0f} s' if done else ''))
        time.sleep(1)
    return done


def _progress(log_path):
    with open(log_path) as f:
        hits = PROGRESS.findall(f.read())
    if not hits:
        return 'starting'
    epoch, it, num, eta = hits[-1]
    return f'epoch {epoch} iter {it}/{num}, eta {eta}'


def _eta(done, running, queue, jobs):
    per_run = statistics.mean(done.values())
    left = len(queue) * per_run + sum(max(per_run - (time.time() - t0), 0)
                                      for _, t0, _ in running.values())
    return left / jobs


def _train_records(work_dir):
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [r for r in map(json.loads, f) if 'loss' in r]


def build_model(config_path, checkpoint=None, seed=0):
    cfg = Config.fromfile(config_path)
    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    if checkpoint is not None:
        load_strict(model, load_weights(checkpoint), source=checkpoint)
    return model.eval(), cfg


def eval_loaders(cfg, data_root):
    loaders = []
    for key in ('knn_bank_dataloader', 'knn_query_dataloader'):
        loader = cfg[key].copy()
        loader.dataset = dict(loader.dataset, data_root=data_root)
        loader.update(num_workers=0, persistent_workers=False)
        loaders.append(Runner.build_dataloader(loader))
    return loaders


def evaluate(model, loaders):
    (bank, bank_y), (query, query_y) = (features_from_dataloader(model, loader)
                                        for loader in loaders)
    return dict(
        knn_cls=knn_accuracy(bank['cls'], bank_y, query['cls'], query_y),
        knn_patch_mean=knn_accuracy(bank['patch_mean'], bank_y, query['patch_mean'], query_y),
        linear_cls=linear_probe_accuracy(bank['cls'], bank_y, query['cls'], query_y))


def raw_pixel_knn(loaders, model):
    def pixels(loader):
        xs, ys = [], []
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            xs.append(data['inputs'][:, 0].flatten(1))  # grayscale: one channel suffices
            ys.extend(int(s.gt_label) for s in data['data_samples'])
        return torch.cat(xs), torch.tensor(ys)

    (bank, bank_y), (query, query_y) = pixels(loaders[0]), pixels(loaders[1])
    return knn_accuracy(bank, bank_y, query, query_y)


@torch.no_grad()
def save_reconstructions(model, loader, path, num=10):
    """Row 1: test images; row 2: what the decoder reconstructs from the encoder's levels."""
    import cv2
    picked, seen = [], set()  # one test image of each class, as far as num allows
    for batch in loader:
        data = model.data_preprocessor(batch, False)
        for image, sample in zip(data['inputs'], data['data_samples']):
            if int(sample.gt_label) not in seen and len(picked) < num:
                seen.add(int(sample.gt_label))
                picked.append(image)
    images = torch.stack(picked)
    with model.tap.record() as calls:
        model.backbone(images)
    pred = model.decoder(calls[0].levels)
    mean, std = model.data_preprocessor.mean, model.data_preprocessor.std

    def to_uint8(x):
        x = (x * std + mean).clamp(0, 255)[:, 0]  # gray
        return x.byte().cpu().numpy()

    rows = [np.concatenate(list(to_uint8(x)), axis=1) for x in (images, pred)]
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(path, grid)


def summarize(args, results, references):
    by_method = {}
    for r in results:
        by_method.setdefault(r['method'], []).append(r)
    metrics = ('knn_cls', 'knn_patch_mean', 'linear_cls')
    paired = {}
    base = {r['seed']: r for r in by_method.get('baseline', [])}
    for method, runs in by_method.items():
        if method == 'baseline' or not base:
            continue
        paired[method] = {}
        for m in metrics:
            diffs = [r[m] - base[r['seed']][m] for r in runs if r['seed'] in base]
            paired[method][m] = dict(
                per_seed=diffs, mean=statistics.mean(diffs),
                std=statistics.stdev(diffs) if len(diffs) > 1 else None)
    lines = [
        f'{args.framework} on Fashion-MNIST, tiny ViT (d128, 6 blocks, patch 4), '
        f'{args.epochs} epochs on '
        f'{args.train_per_class * 10} images, batch {args.batch_size}, {args.seeds} seed(s); '
        f'k-NN: k=20, T=0.07, bank = the pre-training images, queries = '
        f'{args.test_per_class * 10} test images.', '',
        '| method | k-NN CLS | k-NN mean patch | linear CLS | wall s / run | img/s / run |',
        '|---|---|---|---|---|---|'
    ]

    def fmt(values):
        return f'{statistics.mean(values):.2f}' + (
            f' ± {statistics.stdev(values):.2f}' if len(values) > 1 else '')

    for method, runs in by_method.items():
        lines.append(f'| {method} | ' + ' | '.join(fmt([r[m] for r in runs]) for m in metrics) +
                     f' | {statistics.mean(r["wall_s"] for r in runs):.0f} | '
                     f'{statistics.mean(r["images_per_s"] for r in runs):.0f} |')
    lines.append(f'| untrained encoder | {fmt(references["untrained_knn_cls"])} | '
                 f'{fmt(references["untrained_knn_patch_mean"])} | - | - | - |')
    lines.append(f'| raw pixels | {references["raw_pixel_knn"]:.2f} | - | - | - | - |')
    lines += ['', '| paired difference vs baseline (same seed) | k-NN CLS | k-NN mean patch | '
              'linear CLS |', '|---|---|---|---|']
    for method, diff in paired.items():
        lines.append(f'| {method} - baseline | ' + ' | '.join(
            f'{d["mean"]:+.2f}' + (f' ± {d["std"]:.2f}' if d['std'] is not None else '')
            for d in diff.values()) + ' |')
    return paired, '\n'.join(lines)


def main():
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file at once
    args = parse_args()
    quiet_mmengine()
    init_default_scope('mmpretrain')  # dataloaders are built outside a Runner
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()
    data_root = prepare_data(args)
    walls = train_all(args, data_root)

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print('[eval] k-NN and linear probes on frozen features')
    results, untrained_cls, untrained_patch = [], [], []
    loaders = None
    for seed in range(args.seeds):
        model, cfg = build_model(osp.join(ROOT, FRAMEWORKS[args.framework]['baseline']),
                                 seed=seed)
        loaders = loaders or eval_loaders(cfg, data_root)
        untrained = evaluate(model, loaders)
        untrained_cls.append(untrained['knn_cls'])
        untrained_patch.append(untrained['knn_patch_mean'])
    references = dict(raw_pixel_knn=raw_pixel_knn(loaders, model),
                      untrained_knn_cls=untrained_cls, untrained_knn_patch_mean=untrained_patch)
    picture = None
    for (method, seed), wall in walls.items():
        work_dir = osp.join(args.out, f'{method}_seed{seed}')
        config = osp.join(args.out, 'configs', f'{method}_seed{seed}.py')
        model, _ = build_model(config, osp.join(work_dir, f'epoch_{args.epochs}.pth'))
        records = _train_records(work_dir)
        loss_key = 'loss' if method == 'baseline' else 'loss_rec'
        iter_time = statistics.median(r['time'] for r in records)
        result = dict(method=method, seed=seed, **evaluate(model, loaders), wall_s=wall,
                      images_per_s=args.batch_size / iter_time, loss_key=loss_key,
                      # means of the first and the last three logged values
                      loss_first=statistics.mean(r[loss_key] for r in records[:3]),
                      loss_last=statistics.mean(r[loss_key] for r in records[-3:]),
                      iterations=records[-1]['iter'])
        results.append(result)
        print(f'[eval] {method} seed {seed}: k-NN CLS {result["knn_cls"]:.2f}, mean patch '
              f'{result["knn_patch_mean"]:.2f}, linear {result["linear_cls"]:.2f}')
        if method == 'repre' and picture is None:
            picture = osp.join(args.out, 'reconstructions.png')
            save_reconstructions(model, loaders[1], picture)

    paired, table = summarize(args, results, references)
    summary = dict(settings=vars(args), results=results, references=references, paired=paired,
                   total_wall_s=time.time() - t_start, picture=picture,
                   torch=torch.__version__, threads_per_run=1)
    with open(osp.join(args.out, 'results.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    with open(osp.join(args.out, 'results.md'), 'w') as f:
        f.write(table + '\n')
    print('\n' + table + '\n')
    print(f'total {summary["total_wall_s"]:.0f} s; JSON {osp.join(args.out, "results.json")}; '
          f'reconstructions {picture}')


if __name__ == '__main__':
    main()
