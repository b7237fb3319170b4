"""Dense transfer on real images: pre-train once, then segment, RePre vs its base.

For a semantic-segmentation dataset in mmseg's folder layout (``img_dir/``, ``ann_dir/``,
``classes.txt``; see repre_mm/datasets/seg_folder.py):

1. pre-training without labels on the train (+ val) images: the shipped tiny-ViT MoCo v3 / DINO
   baseline and RePre configs, adapted to the data (crop size, patch, channel statistics,
   colour augmentations), 3 seeds, two runs at a time; or existing checkpoints
   (``--checkpoints baseline=A.pth repre=B.pth``);
2. a frozen linear probe of every encoder's patch tokens (final norm and a middle block),
   fitted on the train split, scored on the test split (repre_mm/evaluation/seg_probe.py);
3. fine-tuning through mmseg: the shipped full-size UperNet config, shrunk to the CPU and
   written out (an ordinary mmseg config), run by tools/benchmarks/transfer.sh (backbone export
   by tools/model_converters/vit_layouts.py, strict loading, tools/train.py, tools/test.py);
   mIoU and per-class IoU from mmseg's IoUMetric on the test split;
4. references: the untrained encoder (probe) and the same fine-tuning from random weights
   (``untrained``, paired by seed), and the probe on raw per-patch pixels;
5. paired differences per seed with 95 % intervals and verdicts: first the positive controls
   (baseline - untrained), then RePre - baseline and RePre - the equal-compute baseline;
   a picture of test predictions; results.json / results.md.

A variant chosen on seeds 0-2 is confirmed on fresh seeds, paired on those alone:
``--methods baseline <variant> --first-seed 3`` (finished runs are reused).

Settings are chosen on validation, never on test: the dataset's own val split (or
``--val-fraction F``, images carved out of train with a fixed seed, listed in
<out>/splits/{train,val}.txt) and ``--select finetune_lr=5e-4,1e-3 ...`` fine-tune the first
seed's baseline once per candidate, score mIoU on validation, and run the benchmark with the
winner (selection.json / .md; repre_mm/benchmarks/selection.py). ``--select epochs=60,120``
pre-trains that baseline once per candidate length first; the winner's length is then the
benchmark's.

Training never reads the test split, and no label of the validation split trains anything:
pre-training reads the images (no labels) of img_dir/train (and img_dir/val), the probe is
fitted on train (less the carved images), fine-tuning trains on train (less the carved images)
without validation.
"""
import argparse
import dataclasses
import functools
import hashlib
import os
import os.path as osp
import shutil
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config

from ..apis import init_model
from ..datasets.image_folder import image_statistics
from ..datasets.seg_folder import check_seg_folder
from ..evaluation.dense_probe import FINAL, default_block
from ..evaluation.seg_probe import SegmentationProbe
from ..utils.checkpoint import load_strict, load_weights
from ..utils.logging import quiet_mmengine
from .pretrain import (EQUAL_COMPUTE, FRAMEWORKS, METHODS, ViewSpec, dump_config,
                       plan_pretraining, pretrain_config, pretrain_jobs, run_name)
from ..utils.resources import shipped_config
from .runs import checkpoint_of, file_key, run_jobs, stored_or_computed
from .selection import (add_selection_args, check_selection_args, chosen_text,
                        select_on_validation, selects_pretraining, write_selection)
from .stats import comparison_table, fmt
from .transfer import (UNTRAINED, add_first_seed, all_comparisons, backbone_of, finetune_backbone,
                       finetune_jobs, output_name, parse_checkpoints, pretrain_config_of,
                       run_metrics, set_iteration_schedule, set_quick_defaults,
                       write_picture_grid, write_results)

DOC = __doc__
METRICS = ('probe_miou', 'probe_miou_mid', 'finetune_miou')
METRIC_NAMES = dict(probe_miou='probe mIoU (final norm)', probe_miou_mid='probe mIoU (mid block)',
                    finetune_miou='fine-tuned mIoU')
PRETRAIN_SPLITS = ['train', 'val']  # val where the dataset has one
FULL_CONFIG = 'configs/downstream/mmseg/upernet_vit-small-p16_8xb2-10k_camvid-360x480.py'
PROBE_FILE = 'seg_probe.json'
# bump when the probe changes what it measures: stored scores then no longer match
PROBE_VERSION = 1
VAL_SEED = 0  # the seed of the images --val-fraction carves out of train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DOC.split('\n')[0])
    parser.add_argument('--data', required=True,
                        help='dataset root in mmseg\'s layout: img_dir/{train,[val],test}, '
                        'ann_dir/{...}, classes.txt')
    parser.add_argument('--out', default='work_dirs/seg_transfer')
    parser.add_argument('--quick', action='store_true', help='tiny run for tests (< 3 min)')
    parser.add_argument('--framework', default='mocov3', choices=list(FRAMEWORKS))
    parser.add_argument('--methods', nargs='+', choices=METHODS,
                        help='default: baseline, repre and baseline_equal_compute')
    parser.add_argument('--seeds', type=int, default=3)
    add_first_seed(parser)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (1 thread each)')
    group = parser.add_argument_group('pre-training')
    group.add_argument('--epochs', type=int, default=120)
    group.add_argument('--batch-size', type=int, default=64)
    group.add_argument('--crop', type=int, default=64, help='side of the pre-training crops')
    group.add_argument('--patch', type=int, default=8)
    group.add_argument('--levels', type=int, nargs='+',
                       help="RePre's tapped blocks (default: the shipped config's)")
    group.add_argument('--pretrain-splits', nargs='+', default=PRETRAIN_SPLITS,
                       help='image splits pre-trained on (a missing optional split is skipped)')
    group.add_argument('--pretrain-short-side', type=int,
                       help='pre-train on copies of the images downscaled to this short side '
                       '(default: twice --crop; 0: the images as they are). The crops keep '
                       'their scale; decoding small copies is several times faster.')
    group.add_argument('--checkpoints', nargs='+', metavar='METHOD=PATH',
                       help='evaluate these checkpoints instead of pre-training (one or several '
                       'per method, the i-th of a method is seed --first-seed + i)')
    group.add_argument('--pretrain-config',
                       help='the pre-training config of --checkpoints (default: the config '
                       'stored in the checkpoint by mmengine)')
    group = parser.add_argument_group('evaluation')
    group.add_argument('--short-side', type=int, default=96,
                       help='image short side (pixels) for the probe and the fine-tuning')
    group.add_argument('--finetune-config', default=FULL_CONFIG,
                       help='the full-size mmseg config the CPU fine-tuning is derived from')
    group.add_argument('--finetune-iters', type=int, default=400)
    group.add_argument('--finetune-batch', type=int, default=8)
    group.add_argument('--finetune-lr', type=float, default=1e-3)
    group.add_argument('--head-channels', type=int, default=64,
                       help='UperNet channels (the full config has 512)')
    group.add_argument('--no-finetune', action='store_true', help='the probe only')
    group.add_argument('--picture-images', type=int, default=4)
    add_selection_args(parser, pretrains=True)
    return parser


def parse_args(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    set_quick_defaults(parser, argv, epochs=2, batch_size=8, crop=32, short_side=32,
                       head_channels=16)
    args = parser.parse_args(argv)
    if args.checkpoints and args.methods:
        parser.error('--methods selects the runs to pre-train; --checkpoints names its own.')
    if args.methods is None:
        args.methods = ['baseline', 'repre', EQUAL_COMPUTE]
    if EQUAL_COMPUTE in args.methods and not {'baseline', 'repre'} <= set(args.methods):
        parser.error(f'{EQUAL_COMPUTE} is timed against the baseline and RePre runs of the same '
                     f'seeds: add baseline and repre to --methods (finished runs are reused).')
    check_selection_args(parser, args, pretrains=True)
    if args.checkpoints and selects_pretraining(args):
        parser.error('--select epochs=... pre-trains the candidates: not with --checkpoints, '
                     'whose encoders are trained already.')
    if args.candidates and args.no_finetune:
        parser.error('--select chooses fine-tuning settings: drop --no-finetune.')
    if args.crop % args.patch or args.short_side % args.patch:
        parser.error(f'--crop {args.crop} and --short-side {args.short_side} must be multiples '
                     f'of --patch {args.patch}.')
    if args.checkpoints:
        args.given = parse_checkpoints(parser, args.checkpoints)
        args.methods = list(args.given)
    return args


# --- data ------------------------------------------------------------------------------------
def prepare_data(args) -> dict:
    """The dataset checked once (every pair, size and label value) and its statistics."""
    info = check_seg_folder(args.data, splits=('train', 'test'))
    if 'test' in args.pretrain_splits:
        raise SystemExit('--pretrain-splits must not name the test split: the benchmark is '
                         'scored on it.')
    # the default names val, which a dataset may not have; a split named by hand must exist
    missing = [s for s in args.pretrain_splits if s not in info.pairs]
    if missing and args.pretrain_splits != PRETRAIN_SPLITS:
        raise SystemExit(f'--pretrain-splits {" ".join(missing)}: no such split in {args.data} '
                         f'(it has {", ".join(sorted(info.pairs))}).')
    splits = [s for s in args.pretrain_splits if s in info.pairs]
    images = [image for split in splits for image, _ in info.pairs[split]]
    mean, std, colour = image_statistics(images[:2000], args.short_side)
    short = 2 * args.crop if args.pretrain_short_side is None else args.pretrain_short_side
    image_root = osp.abspath(args.data)
    if short:
        image_root = osp.join(osp.abspath(args.out), 'pretrain_images')
        for split in splits:
            downscaled_copies([i for i, _ in info.pairs[split]],
                              osp.join(args.data, 'img_dir', split),
                              osp.join(image_root, 'img_dir', split), short)
    print(f'[data] {args.data}: {len(info.classes)} classes, ' + ', '.join(
        f'{len(pairs)} {split}' for split, pairs in info.pairs.items()) +
        f' images; median short side {info.train_short_side} px; pre-training on {splits} '
        f'({len(images)} images, {"colour" if colour else "grey"}), mean {mean}, std {std}')
    return dict(info=info, pretrain_splits=splits, num_pretrain=len(images),
                pretrain_root=image_root,
                spec=ViewSpec(img_size=args.crop, patch=args.patch, mean=mean, std=std,
                              colour=colour), **validation_split(args, info))


def validation_split(args, info) -> dict:
    """Where each part is read from: ``finetune_splits`` {part: (folder split, stem list file or
    '')} for train, test and (where there is one) val, and ``probe_train``, the pairs the probe
    is fitted on. ``--val-fraction F`` carves F of the train images (seed VAL_SEED) into
    <out>/splits/val.txt, the rest into <out>/splits/train.txt (mmseg's ann_file: one stem a
    line); otherwise the dataset's own val split, where it has one."""
    from ..datasets.splits import carve
    parts = dict(train=('train', ''), test=('test', ''))
    if args.val_fraction is None:
        if 'val' in info.pairs:
            parts['val'] = ('val', '')
        return dict(finetune_splits=parts, probe_train=info.pairs['train'])
    pairs = info.pairs['train']
    try:
        carved = set(carve(len(pairs), args.val_fraction, VAL_SEED))
    except ValueError as error:
        raise SystemExit(f'--val-fraction {args.val_fraction}: {error}')
    labels = osp.join(args.data, 'ann_dir', 'train')
    stems = [osp.splitext(osp.relpath(label, labels))[0] for _, label in pairs]
    for part, keep in (('train', lambda i: i not in carved), ('val', lambda i: i in carved)):
        path = osp.abspath(osp.join(args.out, 'splits', f'{part}.txt'))
        os.makedirs(osp.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(''.join(f'{stem}\n' for i, stem in enumerate(stems) if keep(i)))
        parts[part] = ('train', path)
    return dict(finetune_splits=parts,
                probe_train=[pair for i, pair in enumerate(pairs) if i not in carved])


def downscaled_copies(images: List[str], src: str, dst: str, short_side: int) -> None:
    """PNG copies of ``images`` (under ``src``) in ``dst``, the same relative paths, the short
    side reduced to ``short_side`` (never enlarged). Existing copies are kept: a restart does
    not write them again."""
    import cv2
    for image in images:
        out = osp.join(dst, osp.splitext(osp.relpath(image, src))[0] + '.png')
        if osp.exists(out):
            continue
        array = cv2.imread(image, cv2.IMREAD_COLOR)
        scale = short_side / min(array.shape[:2])
        if scale < 1:
            size = (round(array.shape[1] * scale), round(array.shape[0] * scale))
            array = cv2.resize(array, size, interpolation=cv2.INTER_AREA)
        os.makedirs(osp.dirname(out), exist_ok=True)
        cv2.imwrite(out + '.tmp.png', array)
        os.replace(out + '.tmp.png', out)  # a killed run leaves no half-written copy


def write_pretrain_config(args, data, method, seed, iters=None) -> str:
    """The shipped config of ``method`` reading the dataset's own images (no labels) of the
    pre-training splits, written under <out>/pretrain/configs/."""
    cfg = pretrain_config(args.framework, method, seed, args.epochs, args.batch_size,
                          data['spec'], iters, log_interval=1 if args.quick else 10,
                          levels=args.levels)
    pipeline = cfg.train_dataloader.dataset.pipeline
    datasets = [dict(type='CustomDataset', data_root=data['pretrain_root'],
                     data_prefix=osp.join('img_dir', split), with_label=False,
                     pipeline=pipeline) for split in data['pretrain_splits']]
    cfg.train_dataloader.dataset = (datasets[0] if len(datasets) == 1 else
                                    dict(type='ConcatDataset', datasets=datasets))
    for key in ('knn_bank_dataloader', 'knn_query_dataloader'):
        cfg.pop(key, None)  # the k-NN hook is dropped: no labels here
    return dump_config(cfg, osp.join(args.out, 'pretrain', 'configs',
                                     f'{run_name(method, seed)}.py'))


def check_pretraining_batches(args, data) -> None:
    """Refuses, before anything trains, a --batch-size that leaves fewer than 2 batches an
    epoch (the last, incomplete one is dropped)."""
    if data['num_pretrain'] // args.batch_size < 2:
        raise SystemExit(f'{data["num_pretrain"]} pre-training images make fewer than 2 batches '
                         f'of {args.batch_size} per epoch: pass a smaller --batch-size.')


def pretrain_iterations(args, data, iters):
    if iters is not None:
        return iters
    return args.epochs * (data['num_pretrain'] // args.batch_size)


# --- the encoders ----------------------------------------------------------------------------
def encoders(args, data) -> tuple:
    """({method: [(config, checkpoint) per seed]}, pre-training info, wall seconds): the
    benchmark's own pre-training runs, or ``--checkpoints``."""
    if args.checkpoints:
        runs = {m: [(pretrain_config_of(args, path), path) for path in paths]
                for m, paths in args.given.items()}
        return runs, {}, {}
    check_pretraining_batches(args, data)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    out = osp.join(args.out, 'pretrain')
    walls, info = plan_pretraining(
        out, args.methods, seeds, lambda m, s, iters: write_pretrain_config(args, data, m, s,
                                                                            iters),
        args.jobs, lambda iters: pretrain_iterations(args, data, iters))
    runs = {m: [(osp.join(out, 'configs', f'{run_name(m, s)}.py'),
                 checkpoint_of(osp.join(out, run_name(m, s)))) for s in seeds]
            for m in args.methods}
    return runs, info, walls


# --- the frozen probe ------------------------------------------------------------------------
def probe_inputs(runs) -> tuple:
    """(patch size, dict(mean, std)) that every encoder's pre-training config shares: the probe
    reads the images once, cut into patches and normalised for all of them. Encoders of
    pre-training configs that differ there are an error naming them, not scored with the first
    one's inputs."""
    inputs = {}
    for seeds in runs.values():
        for config, _ in seeds:
            backbone, norm = backbone_of(config)
            inputs.setdefault((backbone['patch_size'], tuple(norm['mean']), tuple(norm['std'])),
                              []).append(config)
    if len(inputs) > 1:
        found = '; '.join(f'patch {p}, mean {list(m)}, std {list(s)}: {", ".join(configs)}'
                          for (p, m, s), configs in inputs.items())
        raise SystemExit(f'the encoders were pre-trained with different patch sizes or image '
                         f'normalisations ({found}). The probe reads the images once for all '
                         f'of them: score each pre-training recipe in its own run (--out).')
    (patch, mean, std), = inputs
    return patch, dict(mean=list(mean), std=list(std))


def probe_key(args, config: str, checkpoint: Optional[str], seed=None) -> dict:
    """What a stored probe score is reused for: the data, the image size, the encoder (config
    bytes, checkpoint) and, for --val-fraction, the images the probe is fitted on."""
    with open(config, 'rb') as f:
        config_hash = hashlib.sha256(f.read()).hexdigest()
    # the probe's training images differ with --val-fraction (older keys had none)
    carved = dict(val_fraction=args.val_fraction) if args.val_fraction else {}
    return dict(version=PROBE_VERSION, data=osp.abspath(args.data), short_side=args.short_side,
                config=config_hash, seed=seed,
                checkpoint=file_key(checkpoint) if checkpoint else None, **carved)


class ProbeScorer:
    """Scores encoders and raw pixels on one :class:`SegmentationProbe`, whose images are read
    only when a score is missing."""

    def __init__(self, args, data, patch: int, norm: dict):
        self.args, self.data, self.patch, self.norm = args, data, patch, norm

    @functools.cached_property
    def probe(self) -> SegmentationProbe:
        pairs = self.data['info'].pairs
        print(f'[probe] reading {len(self.data["probe_train"])} train / '
              f'{len(pairs["test"])} test images at short side {self.args.short_side}')
        return SegmentationProbe(self.data['probe_train'], pairs['test'],
                                 self.data['info'].classes, self.args.short_side, self.patch,
                                 self.norm['mean'], self.norm['std'])

    def encoder(self, config: str, checkpoint: Optional[str], seed: int = 0) -> dict:
        torch.manual_seed(seed)  # the initial weights of an untrained encoder
        model = init_model(config, checkpoint)
        block = default_block(model.backbone)
        final = self.probe.score_encoder(model.backbone, FINAL)
        mid = self.probe.score_encoder(model.backbone, block)
        return dict(probe_miou=final['miou'], probe_miou_mid=mid['miou'],
                    probe_pixel_acc=final['pixel_acc'], probe_per_class=final['per_class'],
                    probe_mid_block=block)

    def pixels(self) -> dict:
        scores = self.probe.score_pixels()
        return dict(probe_miou=scores['miou'], probe_pixel_acc=scores['pixel_acc'],
                    probe_per_class=scores['per_class'])


def probe_scores(args, data, runs) -> tuple:
    """Probe scores of every encoder ({method: [scores per seed]}, untrained included) and of
    raw pixels."""
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    patch, norm = probe_inputs(runs)
    scorer = ProbeScorer(args, data, patch, norm)
    scores = {}
    for method, seeds in runs.items():
        for seed, (config, checkpoint) in enumerate(seeds, start=args.first_seed):
            where = (osp.dirname(checkpoint) if not args.checkpoints else
                     osp.join(args.out, 'given', run_name(method, seed)))
            scores.setdefault(method, []).append(stored_or_computed(
                osp.join(where, PROBE_FILE), probe_key(args, config, checkpoint),
                lambda: scorer.encoder(config, checkpoint), f'{method} seed {seed}'))
            print(f'[probe] {method} seed {seed}: mIoU {scores[method][-1]["probe_miou"]:.2f} '
                  f'(final), {scores[method][-1]["probe_miou_mid"]:.2f} (mid block)')
    scores[UNTRAINED], raw_pixels = reference_probe_scores(args, runs, scorer)
    print('[probe] untrained: mIoU ' + ', '.join(f'{s["probe_miou"]:.2f}'
                                                 for s in scores[UNTRAINED]) +
          f'; raw pixels {raw_pixels["probe_miou"]:.2f}')
    return scores, raw_pixels


def reference_probe_scores(args, runs, scorer: ProbeScorer) -> tuple:
    """([the untrained encoder's scores per seed], raw pixels' scores), one file each under
    <out>/references: any range of seeds (--first-seed) reuses those stored."""
    # The untrained encoder of seed s: the first method's config of seed s, before training.
    seed_configs = {seed: config for seeds in reversed(list(runs.values()))
                    for seed, (config, _) in enumerate(seeds, start=args.first_seed)}
    untrained = [stored_or_computed(
        osp.join(args.out, 'references', f'untrained_seed{seed}.json'),
        probe_key(args, config, None, seed),
        lambda config=config, seed=seed: scorer.encoder(config, None, seed),
        f'the untrained encoder, seed {seed}') for seed, config in sorted(seed_configs.items())]
    raw_pixels = stored_or_computed(
        osp.join(args.out, 'references', 'raw_pixels.json'),
        dict(version=PROBE_VERSION, data=osp.abspath(args.data), short_side=args.short_side,
             patch=scorer.patch, mean=scorer.norm['mean'], std=scorer.norm['std'],
             **(dict(val_fraction=args.val_fraction) if args.val_fraction else {})),
        scorer.pixels, 'raw pixels')
    return untrained, raw_pixels


# --- fine-tuning through mmseg ---------------------------------------------------------------
def out_indices(depth: int) -> tuple:
    """Four blocks evenly spread over the depth, the last included: (2, 5, 8, 11) for 12."""
    return tuple((i + 1) * depth // 4 - 1 for i in range(4))


def finetune_config(args, data, pretrain_cfg: str, seed: int, name: str,
                    backbone_checkpoint: Optional[str], split: str = 'test') -> str:
    """The full-size mmseg config (``--finetune-config``) shrunk to the CPU and to the
    pre-trained encoder: its backbone (the pre-training key layout) loaded strictly from
    ``backbone_checkpoint`` (what transfer.sh writes: the pre-trained encoder, or from
    scratch its initial weights; None: no loading), four tapped
    blocks, a narrower UperNet, the probe's image size, ``--finetune-iters`` iterations without
    validation, tested on ``split`` (the test split; 'val' for --select). Written under
    <out>/finetune/configs/: tools/train.py trains it as it is."""
    cfg = Config.fromfile(shipped_config(args.finetune_config))
    short = args.short_side
    crop, scale = (short, short), (2 * short, short)
    backbone, norm, embed, _ = finetune_backbone(pretrain_cfg, backbone_checkpoint, crop,
                                                 out_indices)
    num_classes = len(data['info'].classes)
    channels = args.head_channels
    cfg.model.backbone = backbone
    cfg.model.data_preprocessor.update(size=crop, mean=norm['mean'], std=norm['std'],
                                       test_cfg=dict(size_divisor=backbone['patch_size']))
    cfg.model.neck.update(in_channels=[embed] * 4, out_channels=embed)
    cfg.model.decode_head.update(in_channels=[embed] * 4, channels=channels,
                                 num_classes=num_classes)
    cfg.model.auxiliary_head.update(in_channels=embed, channels=max(channels // 2, 8),
                                    num_classes=num_classes)
    for key in ('train_dataloader', 'test_dataloader'):
        loader = cfg[key]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.data_root = osp.abspath(args.data)
        for t in loader.dataset.pipeline:
            if t.type in ('RandomResize', 'Resize'):
                t.scale = scale
            elif t.type == 'RandomCrop':
                t.crop_size = crop
    cfg.train_dataloader.batch_size = args.finetune_batch
    cfg.test_dataloader.update(batch_size=1)
    for key, part in (('train_dataloader', 'train'), ('test_dataloader', split)):
        folder, stems = data['finetune_splits'][part]
        cfg[key].dataset.update(split=folder, ann_file=stems)
    cfg.default_hooks.checkpoint.update(interval=args.finetune_iters, max_keep_ckpts=1)
    set_iteration_schedule(cfg, args, seed, lambda iters, warmup: dict(
        type='PolyLR', eta_min=0.0, power=1.0, begin=warmup, end=iters, by_epoch=False))
    cfg.work_dir = None
    return dump_config(cfg, osp.join(args.out, 'finetune', 'configs', f'{name}.py'))


def finetune_scores(args, data, runs) -> tuple:
    write_config = functools.partial(finetune_config, args, data)
    jobs, where = finetune_jobs(args, runs, write_config, args.first_seed)
    walls = run_jobs(jobs, osp.join(args.out, 'finetune'), args.jobs)
    scores = {}
    for (method, seed), path in where.items():
        metrics = run_metrics(path, f'{method} seed {seed}', args.out)
        per_class = {k[len('IoU.'):]: v for k, v in metrics.items() if k.startswith('IoU.')}
        scores.setdefault(method, []).append(dict(
            finetune_miou=metrics['mIoU'], finetune_aacc=metrics['aAcc'],
            finetune_per_class={k: (None if v != v else v) for k, v in per_class.items()},
            finetune_wall_s=walls[run_name(method, seed)]))
    return scores


def select_settings(args, data, runs) -> Optional[dict]:
    """``--select`` (repre_mm/benchmarks/selection.py): the candidates scored on fine-tuned
    mIoU of the validation split."""
    if args.candidates and 'val' not in data['finetune_splits']:
        raise SystemExit(f'--select scores its candidates on a validation split and {args.data} '
                         f'has none: give --val-fraction F, or add img_dir/val and ann_dir/val.')
    record = select_on_validation(
        args, runs, lambda candidate: functools.partial(finetune_config, candidate, data,
                                                        split='val'),
        lambda metrics: metrics['mIoU'], METRIC_NAMES['finetune_miou'],
        encoders_of=length_candidates(args, data) if selects_pretraining(args) else None)
    if record:
        record['val_images'] = validation_images(args, data)
    return record


def length_candidates(args, data):
    """``--select epochs=...``: the first seed's baseline pre-trained once per candidate length
    (under <out>/select/pretrain_<E>ep/, two at a time). Returns ``candidate -> {'baseline':
    [(config, checkpoint)]}``: the encoder a candidate fine-tunes."""
    check_pretraining_batches(args, data)
    seed, encoders, jobs = args.first_seed, {}, []
    for epochs in sorted({c.get('epochs', args.epochs) for c in args.candidates}):
        length_args = argparse.Namespace(**dict(
            vars(args), epochs=epochs, out=osp.join(args.out, 'select', f'pretrain_{epochs}ep')))
        out = osp.join(length_args.out, 'pretrain')
        jobs += [dataclasses.replace(job, name=f'{epochs}ep_{job.name}') for job in pretrain_jobs(
            out, [('baseline', seed, None)], functools.partial(write_pretrain_config, length_args,
                                                               data),
            lambda iters, a=length_args: pretrain_iterations(a, data, iters))]
        encoders[epochs] = (osp.join(out, 'configs', f'{run_name("baseline", seed)}.py'),
                            osp.join(out, run_name('baseline', seed)))
    run_jobs(jobs, osp.join(args.out, 'select'), args.jobs)

    def encoder_of(candidate):
        config, work_dir = encoders[candidate.get('epochs', args.epochs)]
        return {'baseline': [(config, checkpoint_of(work_dir))]}
    return encoder_of


def choose_on_validation(args, data, runs, timing: dict) -> Optional[dict]:
    """:func:`select_settings`, its record written (selection.json / .md) and timed."""
    t0 = time.time()
    selection = select_settings(args, data, runs)
    if selection:
        pretrained = (' (pre-trained for the candidate\'s epochs, seed '
                      f'{args.first_seed})' if selects_pretraining(args) else '')
        write_selection(args.out, selection, (
            f'Each candidate fine-tuned {selection["encoder"]}{pretrained} on the training '
            f'images and was scored on {selection["val_images"]} validation images.'))
        timing['selection on validation'] = time.time() - t0
    if selection and selects_pretraining(args):
        reuse_winning_encoder(args)
    return selection


def reuse_winning_encoder(args) -> None:
    """The winning length's encoder is the benchmark's first-seed baseline: linked under
    <out>/pretrain/ with its config (the text the benchmark writes for it), so that run is
    reused, not trained again. A link left by an earlier selection is replaced; a run trained
    there by the benchmark itself is left alone."""
    if 'baseline' not in args.methods:
        return
    name = run_name('baseline', args.first_seed)
    source = osp.join(args.out, 'select', f'pretrain_{args.epochs}ep', 'pretrain')
    target = osp.join(args.out, 'pretrain')
    if osp.islink(osp.join(target, name)):
        os.remove(osp.join(target, name))
    if not osp.exists(osp.join(target, name)):
        os.makedirs(osp.join(target, 'configs'), exist_ok=True)
        shutil.copyfile(osp.join(source, 'configs', f'{name}.py'),
                        osp.join(target, 'configs', f'{name}.py'))
        os.symlink(osp.abspath(osp.join(source, name)), osp.join(target, name))


def validation_images(args, data) -> int:
    folder, stems = data['finetune_splits']['val']
    if stems:
        with open(stems) as f:
            return sum(1 for line in f if line.strip())
    return len(data['info'].pairs[folder])


def validation_text(args, data) -> str:
    if 'val' not in data['finetune_splits']:
        return ''
    where = (f'carved from train (--val-fraction {args.val_fraction}, seed {VAL_SEED}; the '
             f'probe and fine-tuning trained on the remaining {len(data["probe_train"])})'
             if args.val_fraction else "the dataset's own")
    use = ('its labels scored only to choose settings (--select)' if args.candidates else
           'its labels not used')
    return f'Validation: {validation_images(args, data)} images, {where}, {use}. '


# --- picture ---------------------------------------------------------------------------------
def palette_of(info) -> np.ndarray:
    if info.palette:
        return np.array(info.palette, np.uint8)
    rng = np.random.default_rng(0)  # a fixed palette where the dataset has none
    return rng.integers(0, 255, (len(info.classes), 3), dtype=np.uint8)


def colourise(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    out = np.zeros(label.shape + (3, ), np.uint8)  # ignored pixels black
    valid = label < len(palette)
    out[valid] = palette[label[valid]]
    return out


def prediction_picture(args, data, methods: List[str], path: str) -> Optional[str]:
    """Rows: test images; columns: image, ground truth, then the fine-tuned (first seed)
    prediction of each of ``methods``, in the dataset's palette."""
    import cv2
    from mmseg.apis import inference_model
    from mmseg.apis import init_model as init_segmentor
    info = data['info']
    palette = palette_of(info)
    models = []
    for method in methods:
        name = run_name(method, args.first_seed)
        work_dir = osp.join(args.out, 'finetune', name)
        checkpoint = checkpoint_of(work_dir)
        if checkpoint is None:
            raise FileNotFoundError(f'the picture needs the fine-tuned {name}, and '
                                    f'{osp.join(args.out, "finetune", name)} has no checkpoint: '
                                    f'did its fine-tuning finish? (see its log there)')
        config = osp.join(args.out, 'finetune', 'configs', f'{name}.py')
        cfg = Config.fromfile(config)
        cfg.model.backbone.init_cfg = None
        model = init_segmentor(cfg, None, device='cpu')
        load_strict(model, load_weights(checkpoint), source=checkpoint)
        model.dataset_meta = dict(classes=info.classes, palette=palette.tolist())
        models.append(model)
    pairs = info.pairs['test']
    picked = [pairs[i] for i in np.linspace(0, len(pairs) - 1, args.picture_images).astype(int)]
    rows, height = [], 180
    for image_path, label_path in picked:
        image = cv2.imread(image_path, cv2.IMREAD_COLOR)[..., ::-1]
        label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
        cells = [image, colourise(label, palette)]
        for model in models:
            pred = inference_model(model, image_path).pred_sem_seg.data[0].numpy()
            cells.append(colourise(pred, palette))
        cells = [cv2.resize(np.ascontiguousarray(c),
                            (round(c.shape[1] * height / c.shape[0]), height),
                            interpolation=cv2.INTER_NEAREST) for c in cells]
        rows.append(cells)
    titles = ['image', 'ground truth'] + [f'{m} (fine-tuned)' for m in methods]
    return write_picture_grid(rows, titles, path, font_scale=0.55)


# --- report ----------------------------------------------------------------------------------
def merge(runs_scores: List[Dict[str, List[dict]]], first_seed: int = 0) -> List[dict]:
    """[{method, seed, metric...}] from {method: [scores per seed]} dicts."""
    merged: Dict[tuple, dict] = {}
    for scores in runs_scores:
        for method, seeds in scores.items():
            for seed, s in enumerate(seeds, start=first_seed):
                merged.setdefault((method, seed), dict(method=method, seed=seed)).update(s)
    return list(merged.values())


def results_table(results, raw_pixels) -> List[str]:
    names = [METRIC_NAMES[m] for m in METRICS]
    lines = ['| encoder | seeds | ' + ' | '.join(names) + ' |', '|---' * (len(METRICS) + 2) + '|']
    by_method: Dict[str, List[dict]] = {}
    for r in results:
        by_method.setdefault(r['method'], []).append(r)
    for method, runs in by_method.items():
        label = ('untrained (probe) / from scratch (fine-tuned)' if method == UNTRAINED
                 else method)
        lines.append(f'| {label} | {len(runs)} | ' + ' | '.join(
            fmt([r[m] for r in runs]) if all(r.get(m) is not None for r in runs) else '-'
            for m in METRICS) + ' |')
    lines.append(f'| raw pixels (probe) | - | {raw_pixels["probe_miou"]:.2f} | - | - |')
    return lines


def per_class_table(results, classes, key) -> List[str]:
    by_method: Dict[str, List[dict]] = {}
    for r in results:
        if r.get(key):
            by_method.setdefault(r['method'], []).append(r[key])
    if not by_method:
        return []
    lines = ['| encoder | ' + ' | '.join(classes) + ' |', '|---' * (len(classes) + 1) + '|']
    for method, runs in by_method.items():
        cells = []
        for c in classes:
            values = [run[c] for run in runs if run.get(c) is not None]
            cells.append(f'{statistics.mean(values):.1f}' if values else '-')
        lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
    return lines


def optimizer_text(config: str, lr: float) -> str:
    """'AdamW lr 0.001, layer decay 0.65' as the fine-tuning config says, not as assumed."""
    wrapper = Config.fromfile(shipped_config(config)).optim_wrapper
    decay = (wrapper.get('paramwise_cfg') or {}).get('layer_decay_rate')
    return f'{wrapper.optimizer.type} lr {lr}' + (f', layer decay {decay}' if decay else '')


def describe(args, data, pretrain_info) -> str:
    info, spec = data['info'], data['spec']
    if args.checkpoints:
        what = 'given checkpoints (' + ', '.join(f'{m}: {len(p)}' for m, p in
                                                 args.given.items()) + ')'
    else:
        what = (f'{args.framework}, tiny ViT (patch {args.patch}), pre-trained on '
                f'{data["num_pretrain"]} {"+".join(data["pretrain_splits"])} images without '
                f'labels, {args.crop}-px random resized crops, {args.epochs} epochs of '
                f'{args.batch_size}')
        if pretrain_info:
            what += (f'; equal-compute baseline {pretrain_info["iters"]} iterations (time '
                     f'ratio RePre / baseline {pretrain_info["time_ratio"]:.3f})')
    finetune = ('no fine-tuning' if args.no_finetune else
                f'fine-tuning: UperNet ({args.head_channels} channels) through mmseg, '
                f'{args.finetune_iters} iterations of {args.finetune_batch} '
                f'{args.short_side}x{args.short_side} crops, '
                f'{optimizer_text(args.finetune_config, args.finetune_lr)}')
    return (f'{args.data}: {len(info.classes)} classes, {len(info.pairs["train"])} train / '
            f'{len(info.pairs["test"])} test images. Encoders: {what}. Probe: linear 1x1 head '
            f'on frozen patch tokens, images at short side {args.short_side} px, logits '
            f'upsampled to the label size, mIoU over the classes on the test split; {finetune}. '
            f'{validation_text(args, data)}Mean ± sd over seeds; mean pixels {spec.mean}.')


def write_report(args, data, results, raw_pixels, pretrain_info, timing, picture,
                 selection=None) -> dict:
    comparisons = all_comparisons(results, METRICS)
    classes = data['info'].classes
    lines = chosen_text(selection) + [describe(args, data, pretrain_info), ''] + \
        results_table(results, raw_pixels) + \
        ['', 'Paired differences (per seed, mean, 95 % Student-t interval, verdict):', ''] + \
        comparison_table(comparisons, METRIC_NAMES) + \
        ([] if args.no_finetune else ['', 'Per-class IoU, fine-tuned (mean over seeds):', ''] +
         per_class_table(results, classes, 'finetune_per_class')) + \
        ['', 'Per-class IoU, frozen probe, final norm (mean over seeds):', ''] + \
        per_class_table(results + [dict(method='raw pixels',
                                        probe_per_class=raw_pixels['probe_per_class'])],
                        classes, 'probe_per_class') + \
        ['', 'Wall clock per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timing.items())]
    settings = {k: v for k, v in vars(args).items() if k != 'given'}
    summary = dict(settings=settings, classes=classes, selection=selection, results=results,
                   raw_pixels=raw_pixels,
                   paired=comparisons, equal_compute=pretrain_info, timing_s=timing,
                   picture=picture, torch=torch.__version__)
    write_results(args.out, summary, lines, args.first_seed)
    return summary


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file at once
    args = parse_args(argv)
    quiet_mmengine()
    os.makedirs(args.out, exist_ok=True)
    timing, t0 = {}, time.time()
    data = prepare_data(args)
    selection = None
    if selects_pretraining(args):  # first: the benchmark then pre-trains the winner's length
        selection = choose_on_validation(args, data, None, timing)
    t1 = time.time()
    runs, pretrain_info, _ = encoders(args, data)
    timing['pre-training'] = time.time() - t1
    if not selects_pretraining(args):
        selection = choose_on_validation(args, data, runs, timing)
    t1 = time.time()
    probe, raw_pixels = probe_scores(args, data, runs)
    timing['probe'] = time.time() - t1
    parts = [probe]
    picture = None
    if not args.no_finetune:
        t2 = time.time()
        parts.append(finetune_scores(args, data, runs))
        timing['fine-tuning'] = time.time() - t2
        shown = [m for m in ('baseline', 'repre') if m in runs] or list(runs)[:2]
        picture_path = osp.join(args.out, output_name('predictions', args.first_seed) + '.png')
        picture = prediction_picture(args, data, shown, picture_path)
    timing['total'] = time.time() - t0
    results = merge(parts, args.first_seed)
    summary = write_report(args, data, results, raw_pixels, pretrain_info, timing, picture,
                           selection)
    report = osp.join(args.out, output_name('results', args.first_seed) + '.md')
    print(f'total {timing["total"]:.0f} s; {report}; picture '
          f'{picture}')
    return summary


if __name__ == '__main__':  # python -m repre_mm.benchmarks.seg_transfer: from a wheel install too
    main()
