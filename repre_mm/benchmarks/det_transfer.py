"""Detection transfer on real photos: Mask R-CNN through mmdet, RePre vs its base.

For an instance dataset in COCO format (``ROOT/annotations/instances_{train,test}.json``, the
images under ``ROOT/images/`` or at the JSONs' ``file_name`` paths relative to ROOT):

1. the encoders: the pre-training runs of a seg_transfer benchmark (``--pretrained
   <seg out>/pretrain``: the MoCo v3 baseline, RePre and the equal-compute baseline, per seed;
   nothing is pre-trained again) or given checkpoints (``--checkpoints baseline=A.pth ...``);
2. fine-tuning through mmdet: the shipped Mask R-CNN ViT-S/16 + simple feature pyramid config,
   shrunk to the CPU and to the pre-trained tiny ViT and written out (an ordinary mmdet config),
   run by tools/benchmarks/transfer.sh (backbone export by tools/model_converters/vit_layouts.py,
   strict loading, tools/train.py, tools/test.py); box and mask AP (AP, AP50, AP75) from mmdet's
   CocoMetric on the test split, at the config's own score threshold;
3. references: the same fine-tuning from the backbone's initial weights (``untrained``, paired
   by seed: the same module and trainable parameters, loaded as strictly), and the weights the
   baseline's first-seed fine-tuning started from (pre-trained backbone, initial heads, saved
   by the run itself: "0 iterations"), tested by tools/test.py;
4. paired differences per seed with 95 % intervals and verdicts: first the positive control
   (baseline - untrained), then RePre - baseline and RePre - the equal-compute baseline; a
   picture of test predictions; results.json / results.md.

A variant chosen on seeds 0-2 is confirmed on fresh seeds, paired on those alone:
``--methods baseline <variant> --first-seed 3`` (finished runs are reused).

Settings are chosen on validation, never on test: ``--val-fraction F`` (or the dataset's own
instances_val.json) and ``--select finetune_lr=1e-4,2e-4 ...`` fine-tune the first seed's
baseline once per candidate, score mask AP on validation, and run the benchmark with the winner
(selection.json / .md; repre_mm/benchmarks/selection.py).

Training never reads the test split: fine-tuning trains on instances_train.json (less the
validation images) without validation; instances_test.json is read by tools/test.py only.
"""
import argparse
import functools
import json
import os
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config

from ..utils.checkpoint import load_checkpoint_meta, load_strict, load_weights
from ..utils.logging import quiet_mmengine
from .pretrain import EQUAL_COMPUTE, dump_config, run_name
from ..utils.resources import shipped_config
from .runs import Job, checkpoint_of, read_json, run_jobs, tool, write_json
from .selection import (add_selection_args, check_selection_args, chosen_text,
                        select_on_validation, write_selection)
from .stats import comparison_table, fmt
from .transfer import (UNTRAINED, add_first_seed, all_comparisons, backbone_of, config_key,
                       finetune_backbone, finetune_jobs, output_name, parse_checkpoints,
                       pretrain_config_of, run_metrics, set_iteration_schedule,
                       set_quick_defaults, vit_size, write_picture_grid, write_results)

DOC = __doc__
FULL_CONFIG = 'configs/downstream/mmdet/mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco.py'
SPLITS = ('train', 'test')
ANNOTATIONS = 'annotations/instances_{}.json'  # under --data, per split (and 'val', optional)
SELECT_METRIC = 'mask_ap'  # what --select maximises on validation: masks show local features
VAL_SEED = 0  # the seed of the images --val-fraction carves out of train
# the benchmark's metric -> mmdet CocoMetric's key in tools/test.py's metrics.json (0-1)
METRICS = dict(box_ap='coco/bbox_mAP', box_ap50='coco/bbox_mAP_50', box_ap75='coco/bbox_mAP_75',
               mask_ap='coco/segm_mAP', mask_ap50='coco/segm_mAP_50',
               mask_ap75='coco/segm_mAP_75')
METRIC_NAMES = dict(box_ap='box AP', box_ap50='box AP50', box_ap75='box AP75',
                    mask_ap='mask AP', mask_ap50='mask AP50', mask_ap75='mask AP75')
# the reference for the masks: each detection's box filled as its mask (BoxMaskCocoMetric)
BOX_MASK_METRICS = dict(box_mask_ap='box_mask/segm_mAP', box_mask_ap50='box_mask/segm_mAP_50')
BOX_MASK_NAMES = dict(box_mask_ap='box-mask AP', box_mask_ap50='box-mask AP50')
MAX_DRAWN = 10  # detections drawn per image in the picture, the best first
# RGB; colours rare in photos of animals on grass under the sky
TRUTH_COLOUR, PREDICTION_COLOUR = (255, 220, 0), (255, 0, 200)
ROIS_PER_IMAGE = 128  # RoIs sampled per training image (the full config: 512)
DEFAULT_METHODS = ('baseline', 'repre', EQUAL_COMPUTE)
ZERO_ITERS = '0_iters'  # suffix of the work directory of the "0 iterations" reference
# bump when the initial-weights checkpoint changes how it is made: stored scores then no
# longer match
ZERO_ITERS_VERSION = 2
INITIAL_WEIGHTS = 'iter_0.pth'  # what InitialWeightsHook saves in each fine-tuning's work_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=DOC.split('\n')[0])
    parser.add_argument('--data', required=True,
                        help='COCO-format dataset root: annotations/instances_{train,test}.json, '
                        'images/ (or file_name relative to the root)')
    parser.add_argument('--out', default='work_dirs/det_transfer')
    parser.add_argument('--quick', action='store_true', help='tiny run for tests (< 3 min)')
    parser.add_argument('--seeds', type=int, default=3,
                        help='seeds of --pretrained runs (fine-tuning seed = pre-training seed)')
    add_first_seed(parser)
    parser.add_argument('--jobs', type=int, default=2, help='runs at a time (1 thread each)')
    group = parser.add_argument_group('the encoders (one of --pretrained, --checkpoints)')
    group.add_argument('--pretrained', metavar='DIR',
                       help="a seg_transfer output's pretrain/ folder: its runs are reused "
                       '(configs/<method>_seed<s>.py and <method>_seed<s>/last_checkpoint)')
    group.add_argument('--methods', nargs='+',
                       help='methods of --pretrained (default: baseline, repre, '
                       'baseline_equal_compute)')
    group.add_argument('--checkpoints', nargs='+', metavar='METHOD=PATH',
                       help='fine-tune these checkpoints (one or several per method, the i-th '
                       'of a method is seed --first-seed + i)')
    group.add_argument('--pretrain-config',
                       help='the pre-training config of --checkpoints (default: the config '
                       'stored in the checkpoint by mmengine)')
    group = parser.add_argument_group('fine-tuning')
    group.add_argument('--finetune-config', default=FULL_CONFIG,
                       help='the full-size mmdet config the CPU fine-tuning is derived from')
    group.add_argument('--short-side', type=int, default=128,
                       help='input short side (pixels); the long side at most twice it')
    group.add_argument('--finetune-iters', type=int, default=1000)
    group.add_argument('--finetune-batch', type=int, default=4)
    group.add_argument('--finetune-lr', type=float, default=2e-4,
                       help='AdamW lr (the full config: 1e-4 for a batch of 16 and 12 epochs)')
    group.add_argument('--neck-channels', type=int, default=64,
                       help='channels of the feature pyramid, RPN and RoI heads (the full '
                       'config has 256; its box head fc 1024, here 4x this)')
    add_selection_args(parser)
    group.add_argument('--picture-images', type=int, default=4)
    group.add_argument('--picture-score', type=float, default=0.3,
                       help='detections drawn in the picture: score at least this (the '
                       'metrics use every detection above the config\'s threshold)')
    return parser


def parse_args(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    set_quick_defaults(parser, argv, short_side=48, neck_channels=16)
    args = parser.parse_args(argv)
    if bool(args.pretrained) == bool(args.checkpoints):
        parser.error('det_transfer does not pre-train: pass either --pretrained '
                     '<seg_transfer out>/pretrain (its runs are reused) or --checkpoints '
                     'METHOD=PATH ..., not both.')
    if args.checkpoints:
        if args.methods:
            parser.error('--methods selects runs of --pretrained; --checkpoints names its own.')
        args.given = parse_checkpoints(parser, args.checkpoints)
        args.methods = list(args.given)
    if args.short_side < 32:
        parser.error(f'--short-side {args.short_side}: give at least 32 (pixels).')
    if args.finetune_iters < 1:
        parser.error('--finetune-iters must be at least 1 (the "0 iterations" reference is '
                     'added by the benchmark itself).')
    check_selection_args(parser, args)
    return args


# --- data ------------------------------------------------------------------------------------
def check_coco_folder(root: str) -> dict:
    """The dataset checked once, before any job starts: both annotation files, the same
    categories in both, annotations in both, every image found (under ``images/`` or at
    ``file_name`` relative to ``root``).

    Returns:
        dict: root (absolute), classes (category names in the JSONs' order: mmdet's label
        order), image_prefix ('images/' or ''), ann_files {split: absolute path}, counts
        {split: {images, instances}}, median_short_side (train).
    """
    if not osp.isdir(root):
        raise SystemExit(f'--data {root} is not a folder.')
    root = osp.abspath(root)
    cocos = {}
    for split in SPLITS:
        path = osp.join(root, ANNOTATIONS.format(split))
        if not osp.isfile(path):
            raise SystemExit(
                f'{path} is missing: --data takes a COCO-format dataset with '
                f'{ANNOTATIONS.format("train")} and {ANNOTATIONS.format("test")}. From images '
                f'and mask PNGs: python tools/dataset_converters/masks_to_coco.py IMAGES MASKS '
                f'{path} --classes NAME [--binary] [--image-root {osp.join(root, "images")}]')
        try:
            with open(path) as f:
                coco = json.load(f)
        except ValueError as error:
            raise SystemExit(f'{path} is not valid JSON ({error}).')
        missing = [k for k in ('images', 'annotations', 'categories')
                   if not isinstance(coco, dict) or k not in coco]
        if missing:
            raise SystemExit(f'{path} has no {", ".join(missing)}: not a COCO instances file.')
        cocos[split] = coco
    categories = {s: [(c['id'], c['name']) for c in cocos[s]['categories']] for s in SPLITS}
    if not categories['train']:
        raise SystemExit(f'{osp.join(root, ANNOTATIONS.format("train"))} has no categories.')
    if categories['train'] != categories['test']:
        raise SystemExit(
            f'the categories (id, name) differ: train {categories["train"]}, test '
            f'{categories["test"]}. Write both files with the same --classes.')
    for split, coco in cocos.items():
        path = osp.join(root, ANNOTATIONS.format(split))
        known = {i for i, _ in categories[split]}
        unknown = sorted({a['category_id'] for a in coco['annotations']} - known)
        if unknown:
            raise SystemExit(f'{path}: annotations of category id(s) {unknown[:5]}, which '
                             f'"categories" does not list.')
        if not coco['annotations']:
            raise SystemExit(f'{path} has no annotations: the {split} split needs instances '
                             f'(training needs them; AP is undefined without them).')
    prefix = image_prefix(root, [im['file_name'] for s in SPLITS
                                 for im in cocos[s]['images']])
    shorts = [min(im['width'], im['height']) for im in cocos['train']['images']
              if 'width' in im and 'height' in im]
    return dict(root=root, classes=[name for _, name in categories['train']],
                image_prefix=prefix,
                ann_files={s: osp.join(root, ANNOTATIONS.format(s)) for s in SPLITS},
                counts={s: dict(images=len(cocos[s]['images']),
                                instances=len(cocos[s]['annotations'])) for s in SPLITS},
                median_short_side=statistics.median(shorts) if shorts else None)


def image_prefix(root: str, file_names: List[str]) -> str:
    """'images/' when every file_name is found under root/images/, '' when every one is found
    under root; otherwise an error naming files that are missing."""
    missing = {}
    for prefix in ('images/', ''):
        missing[prefix] = [f for f in file_names if not osp.isfile(osp.join(root, prefix, f))]
        if not missing[prefix]:
            return prefix
    where = {'images/': f'under {osp.join(root, "images")}',
             '': f'at file_name relative to {root}'}
    found = ' and '.join(f'{len(files)} of {len(file_names)} images are not {where[prefix]} '
                         f'(e.g. {osp.join(root, prefix, files[0])})'
                         for prefix, files in missing.items())
    raise SystemExit(
        f'{found}. Put the images in {osp.join(root, "images")} with file_name relative to it '
        f'(masks_to_coco.py --image-root {osp.join(root, "images")}).')


def validation_split(args, data: dict) -> dict:
    """``data`` with its validation split: ``--val-fraction F`` carves F of the training images
    (seed VAL_SEED) into <out>/splits/instances_val.json, training then reads
    <out>/splits/instances_train.json (the rest); otherwise the dataset's own
    annotations/instances_val.json where it exists. Validation labels are only ever scored
    (``--select``); the test split is untouched."""
    from ..datasets.splits import split_coco
    own = osp.join(data['root'], ANNOTATIONS.format('val'))
    if args.val_fraction is None:
        if osp.isfile(own):
            with open(own) as f:
                val = json.load(f)
            data['ann_files']['val'] = own
            data['counts']['val'] = dict(images=len(val['images']),
                                         instances=len(val['annotations']))
        return data
    with open(data['ann_files']['train']) as f:
        train = json.load(f)
    try:
        rest, val = split_coco(train, args.val_fraction, VAL_SEED)
    except ValueError as error:
        raise SystemExit(f'--val-fraction {args.val_fraction}: {error}')
    for split, coco in (('train', rest), ('val', val)):
        path = osp.abspath(osp.join(args.out, 'splits', f'instances_{split}.json'))
        write_json(path, coco)
        data['ann_files'][split] = path
        data['counts'][split] = dict(images=len(coco['images']),
                                     instances=len(coco['annotations']))
    return data


# --- the encoders ----------------------------------------------------------------------------
def encoders(args) -> Dict[str, List[tuple]]:
    """{method: [(pre-training config, checkpoint) per seed]}: the runs of ``--pretrained``, or
    ``--checkpoints``."""
    if args.checkpoints:
        return {m: [(pretrain_config_of(args, path), path) for path in paths]
                for m, paths in args.given.items()}
    root = args.pretrained
    if not osp.isdir(osp.join(root, 'configs')):
        raise SystemExit(f'--pretrained {root} has no configs/ folder: give the pretrain/ '
                         f'folder of a seg_transfer output (e.g. work_dirs/camvid/pretrain).')
    if args.methods is None:  # a missing run is an error, not a method silently left out
        args.methods = list(DEFAULT_METHODS)
    runs, missing = {}, []
    for method in args.methods:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            name = run_name(method, seed)
            config = osp.join(root, 'configs', f'{name}.py')
            checkpoint = checkpoint_of(osp.join(root, name))
            if not osp.isfile(config) or checkpoint is None:
                missing.append(name)
            runs.setdefault(method, []).append((config, checkpoint))
    if missing:
        raise SystemExit(
            f'--pretrained {root} has no finished run {", ".join(missing)} (its '
            f'configs/<run>.py and <run>/last_checkpoint). Let the seg_transfer run that writes '
            f'there finish, or pass fewer --seeds / other --methods.')
    return runs


# --- fine-tuning through mmdet ---------------------------------------------------------------
def finetune_config(args, data, pretrain_cfg: str, seed: int, name: str,
                    backbone_checkpoint: Optional[str], split: str = 'test') -> str:
    """The full-size mmdet config (``--finetune-config``) shrunk to the CPU and to the
    pre-trained encoder: its backbone (the pre-training key layout) loaded strictly from
    ``backbone_checkpoint`` (what transfer.sh writes: the pre-trained encoder, or from
    scratch its initial weights; None: no loading), the last
    block's feature map into the simple feature pyramid, narrower RPN and RoI heads, the
    dataset's classes, images resized to ``--short-side``, ``--finetune-iters`` iterations
    without validation, ``split`` (the test split; 'val' for --select) scored by CocoMetric
    (box and mask). Written under <out>/finetune/configs/: tools/train.py trains it as it is."""
    cfg = Config.fromfile(shipped_config(args.finetune_config))
    short = args.short_side
    backbone, norm, embed, _ = finetune_backbone(pretrain_cfg, backbone_checkpoint,
                                                 (short, short), lambda depth: (depth - 1, ))
    shrink_mask_rcnn(cfg.model, backbone, norm, embed, args.neck_channels,
                     len(data['classes']))
    scale = (2 * short, short)
    for key, part in (('train_dataloader', 'train'), ('test_dataloader', split)):
        loader = cfg[key]
        loader.update(num_workers=0, persistent_workers=False)
        loader.dataset.update(data_root=data['root'], ann_file=data['ann_files'][part],
                              data_prefix=dict(img=data['image_prefix']),
                              metainfo=dict(classes=tuple(data['classes'])))
        for t in loader.dataset.pipeline:
            if t.type == 'Resize':
                t.scale = scale
            elif t.type == 'RandomResize':  # multi-scale recipes: the same range, scaled
                top = max(min(s) for s in t.scale)
                t.scale = [tuple(round(v * short / top) for v in s) for s in t.scale]
    cfg.train_dataloader.update(batch_size=args.finetune_batch,
                                sampler=dict(type='InfiniteSampler', shuffle=True))
    cfg.test_dataloader.batch_size = 1
    cfg.test_evaluator = [
        dict(cfg.test_evaluator, ann_file=data['ann_files'][split], metric=['bbox', 'segm']),
        dict(type='BoxMaskCocoMetric', ann_file=data['ann_files'][split])]
    cfg.default_hooks.checkpoint = dict(type='AtomicCheckpointHook', by_epoch=False,
                                        interval=args.finetune_iters, max_keep_ckpts=1)
    # the weights this run starts from: the "0 iterations" reference tests them
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='InitialWeightsHook', filename=INITIAL_WEIGHTS)]
    cfg.log_processor = dict(type='LogProcessor', window_size=10, by_epoch=False)
    # the 1x schedule's shape (steps at 8/12 and 11/12), in iterations
    set_iteration_schedule(cfg, args, seed, lambda iters, _: dict(
        type='MultiStepLR', by_epoch=False, begin=0, end=iters, gamma=0.1,
        milestones=[round(iters * 8 / 12), round(iters * 11 / 12)]))
    return dump_config(cfg, osp.join(args.out, 'finetune', 'configs', f'{name}.py'))


def shrink_mask_rcnn(model, backbone: dict, norm: dict, embed: int, channels: int,
                     num_classes: int) -> None:
    """The full config's Mask R-CNN (``model``, changed in place) on ``backbone``: its
    normalisation, a pyramid whose strides follow the patch, RPN and RoI heads of ``channels``
    channels for ``num_classes`` classes, fewer training RoIs."""
    patch = backbone['patch_size']
    model.backbone = backbone
    # the pyramid's strides follow the patch: (4, 2, 1, 0.5) x the ViT map, plus a pooled level
    scales = model.neck.get('scale_factors', (4.0, 2.0, 1.0, 0.5))
    strides = [patch / s for s in scales]
    strides.append(2 * strides[-1])
    if any(s != int(s) for s in strides):
        raise SystemExit(f'patch {patch}: the pyramid strides {strides} are not whole pixels; '
                         f'a patch size divisible by 4 is needed.')
    strides = [int(s) for s in strides]
    model.data_preprocessor.update(mean=norm['mean'], std=norm['std'], bgr_to_rgb=True,
                                   pad_size_divisor=max(32, 2 * patch))
    model.neck.update(in_channels=embed, out_channels=channels, num_outs=len(strides))
    model.rpn_head.update(in_channels=channels, feat_channels=channels)
    model.rpn_head.anchor_generator.strides = strides
    roi = model.roi_head
    for extractor in (roi.bbox_roi_extractor, roi.mask_roi_extractor):
        # a RoI meets a map of the stride it meets in the full config (finest_scale 56 px for
        # stride 4): with patch 8 the strides halve, and so does the scale
        finest = round(extractor.get('finest_scale', 56) * strides[0] / 4)
        extractor.update(out_channels=channels, featmap_strides=strides[:-1],
                         finest_scale=finest)
    roi.bbox_head.update(in_channels=channels, fc_out_channels=4 * channels,
                         num_classes=num_classes)
    roi.mask_head.update(in_channels=channels, conv_out_channels=channels,
                         num_classes=num_classes)
    # the CPU's share of the training RoIs: a few objects per image need fewer samples than
    # COCO's dozens (the mask head's and RoIAlign's cost scale with them), and the proposals
    # of a small image fewer candidates; model.test_cfg is kept as it is, its score threshold
    # (0.05) included: AP of what a user would get
    model.train_cfg.rcnn.sampler.num = ROIS_PER_IMAGE
    model.train_cfg.rpn_proposal.nms_pre = model.test_cfg.rpn.nms_pre


def zero_iterations_job(args, runs) -> tuple:
    """The "0 iterations" reference: the weights the baseline's first-seed fine-tuning started
    from (its ``iter_0.pth``, saved by InitialWeightsHook after the pre-trained backbone was
    loaded and the heads drawn), tested by tools/test.py with that run's config, after that
    run. Returns (job, method, metrics path)."""
    method = 'baseline' if 'baseline' in runs else next(iter(runs))
    seed = args.first_seed
    run = run_name(method, seed)
    name = f'{run}_{ZERO_ITERS}'
    work_dir = osp.join(args.out, 'finetune', name)
    config = osp.join(args.out, 'finetune', 'configs', f'{run}.py')
    initial = osp.join(args.out, 'finetune', run, INITIAL_WEIGHTS)
    metrics = osp.join(work_dir, 'metrics.json')

    def prepare():
        if not osp.isfile(initial):
            raise FileNotFoundError(f'{initial} is missing: the fine-tuning of {run} saves the '
                                    f'weights it starts from there (InitialWeightsHook); see its '
                                    f'log under {osp.join(args.out, "finetune")}.')
        key = dict(config_key(config, initial), version=ZERO_ITERS_VERSION)
        key_file = osp.join(work_dir, 'zero_iters_key.json')
        if osp.exists(metrics) and read_json(key_file) == key:
            return None
        if osp.exists(metrics):
            os.remove(metrics)
        os.makedirs(work_dir, exist_ok=True)
        write_json(key_file, key)
        return tool('test.py') + [config, initial, '--work-dir', osp.join(work_dir, 'test'),
                                  '--out', metrics, '--out-item', 'metrics']

    return Job(name, work_dir, prepare, after=[run]), method, metrics


def build_detector(config: str):
    """The mmdet model of a derived config, its backbone's ``init_cfg`` dropped (the caller
    loads what it needs)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    cfg = Config.fromfile(config)  # its custom_imports register repre_mm and mmpretrain
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    return model


def detection_scores(metrics: dict) -> dict:
    """Percent AP of tools/test.py's metrics. CocoMetric writes no key at all when the model made
    no detection above the score threshold on the whole test split: every AP is then 0 and
    ``no_detections`` says why. Some keys without the others is an error, never a silent 0."""
    read = dict(METRICS, **BOX_MASK_METRICS)
    missing = [key for key in read.values() if key not in metrics]
    if missing and len(missing) < len(read):
        raise KeyError(f'the test metrics lack {missing} but have '
                       f'{sorted(k for k in metrics if "/" in k)}: are the evaluators '
                       f'(CocoMetric bbox + segm, BoxMaskCocoMetric) the ones this benchmark '
                       f'reads?')
    scores = {m: 100 * metrics[key] if key in metrics else 0.0 for m, key in read.items()}
    scores['no_detections'] = bool(missing)
    return scores


def finetune_scores(args, data, runs) -> tuple:
    """({method: [scores per seed]}, the "0 iterations" scores)."""
    jobs, where = finetune_jobs(args, runs, functools.partial(finetune_config, args, data),
                                args.first_seed)
    zero_job, zero_method, zero_metrics = zero_iterations_job(args, runs)
    walls = run_jobs(jobs + [zero_job], osp.join(args.out, 'finetune'), args.jobs)
    scores = {}
    for (method, seed), path in where.items():
        metrics = run_metrics(path, f'{method} seed {seed}', args.out)
        scores.setdefault(method, []).append(dict(detection_scores(metrics),
                                                  finetune_wall_s=walls[run_name(method, seed)]))
    zero_run = f'the 0-iteration reference ({zero_method} seed {args.first_seed})'
    zero = dict(detection_scores(run_metrics(zero_metrics, zero_run, args.out)),
                method=zero_method, seed=args.first_seed, test_wall_s=walls[zero_job.name])
    return scores, zero


def select_settings(args, data, runs) -> Optional[dict]:
    """``--select`` (repre_mm/benchmarks/selection.py): the candidates scored on mask AP of
    the validation split."""
    if args.candidates and 'val' not in data['ann_files']:
        raise SystemExit(f'--select scores its candidates on a validation split and there is '
                         f'none: give --val-fraction F, or add {ANNOTATIONS.format("val")} '
                         f'under --data.')
    record = select_on_validation(
        args, runs, lambda candidate: functools.partial(finetune_config, candidate, data,
                                                        split='val'),
        lambda metrics: detection_scores(metrics)[SELECT_METRIC], METRIC_NAMES[SELECT_METRIC])
    if record:
        record['val_images'] = data['counts']['val']['images']
    return record


# --- picture ---------------------------------------------------------------------------------
def draw_instances(image: np.ndarray, masks: np.ndarray, boxes: np.ndarray, colour,
                   height: int, labels: Optional[List[str]] = None) -> np.ndarray:
    """``image`` (RGB) scaled to ``height`` pixels, each of ``masks`` (N x H x W bool, the
    image's size) filled half-transparent and its box (N x 4, x0 y0 x1 y1 in image pixels)
    outlined, at the display size (lines equally thin on small and large images)."""
    import cv2
    scale = height / image.shape[0]
    size = (round(image.shape[1] * scale), height)
    out = cv2.resize(np.ascontiguousarray(image), size).astype(np.float32)
    for mask in masks:
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
        out[mask] = 0.5 * out[mask] + 0.5 * np.array(colour, np.float32)
    out = out.astype(np.uint8)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2)
        if labels:  # dark text on a tag of the box's colour: readable over any mask
            (w, h), _ = cv2.getTextSize(labels[i], cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
            cv2.rectangle(out, (x0, y0), (x0 + w + 4, y0 + h + 6), colour, -1)
            cv2.putText(out, labels[i], (x0 + 2, y0 + h + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (0, 0, 0), 1, cv2.LINE_AA)
    return out


def prediction_picture(args, data, methods: List[str], path: str) -> Optional[str]:
    """Rows: test images; columns: image, ground truth, then the fine-tuned (first seed) masks
    and boxes of each of ``methods``: the best ``MAX_DRAWN`` detections with score >=
    ``--picture-score``."""
    import cv2
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DefaultScope
    from pycocotools.coco import COCO
    models = []
    for method in methods:
        name = run_name(method, args.first_seed)
        checkpoint = checkpoint_of(osp.join(args.out, 'finetune', name))
        if checkpoint is None:
            raise FileNotFoundError(f'the picture needs the fine-tuned {name}, and '
                                    f'{osp.join(args.out, "finetune", name)} has no checkpoint: '
                                    f'did its fine-tuning finish? (see its log there)')
        model = build_detector(osp.join(args.out, 'finetune', 'configs', f'{name}.py'))
        load_strict(model, load_weights(checkpoint), source=checkpoint)
        models.append(model.eval())
    cfg = Config.fromfile(osp.join(args.out, 'finetune', 'configs',
                                   f'{run_name(methods[0], args.first_seed)}.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    coco = COCO(data['ann_files']['test'])
    picked = np.linspace(0, len(dataset) - 1, min(args.picture_images, len(dataset))).astype(int)
    rows, height = [], 200
    for index in picked:
        item = dataset[int(index)]
        info = dataset.get_data_info(int(index))
        image = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)[..., ::-1]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[info['img_id']], iscrowd=None))
        masks = np.array([coco.annToMask(a) > 0 for a in anns]).reshape(-1, *image.shape[:2])
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (a['bbox'] for a in anns)]
        cells = [draw_instances(image, masks[:0], [], (0, 0, 0), height),
                 draw_instances(image, masks, boxes, TRUTH_COLOUR, height)]
        for model in models:
            with torch.no_grad():
                pred = model.test_step(pseudo_collate([item]))[0].pred_instances
            pred = pred[pred.scores.argsort(descending=True)]
            pred = pred[(pred.scores >= args.picture_score).nonzero()[:MAX_DRAWN, 0]]
            labels = [f'{data["classes"][int(c)]} {float(s):.2f}'
                      for c, s in zip(pred.labels, pred.scores)]
            cells.append(draw_instances(image, pred.masks.numpy().astype(bool),
                                        pred.bboxes.numpy(), PREDICTION_COLOUR, height, labels))
        rows.append(cells)
    titles = ['image', 'ground truth'] + [
        f'{m} (seed {args.first_seed}), score >= {args.picture_score:g}' for m in methods]
    return write_picture_grid(rows, titles, path, font_scale=0.45)


# --- report ----------------------------------------------------------------------------------
def merge(scores: Dict[str, List[dict]], pretrain_iters: Dict[str, List[Optional[int]]],
          first_seed: int = 0) -> List[dict]:
    """[{method, seed, metric...}] from {method: [scores per seed]}, the i-th seed
    ``first_seed + i``."""
    return [dict(method=method, seed=first_seed + i, **s,
                 pretrain_iters=pretrain_iters.get(method, [None] * (i + 1))[i])
            for method, seeds in scores.items() for i, s in enumerate(seeds)]


def results_table(results: List[dict], zero: dict) -> List[str]:
    """Mean +- sd per method of every metric, and of the box-mask reference (each detection's
    box filled as its mask: a mask head that learned beats it)."""
    names = dict(METRIC_NAMES, **BOX_MASK_NAMES)
    lines = ['| encoder | seeds | ' + ' | '.join(names.values()) + ' |',
             '|---' * (len(names) + 2) + '|']
    by_method: Dict[str, List[dict]] = {}
    for r in results:
        by_method.setdefault(r['method'], []).append(r)
    for method, runs in by_method.items():
        label = 'untrained (random initialisation)' if method == UNTRAINED else method
        lines.append(f'| {label} | {len(runs)} | ' +
                     ' | '.join(fmt([r[m] for r in runs]) for m in names) + ' |')
    lines.append(f'| {zero["method"]}, 0 iterations (seed {zero["seed"]}) | 1 | ' +
                 ' | '.join(f'{zero[m]:.2f}' for m in names) + ' |')
    return lines


def trained_vs_untrained_heads(results: List[dict], zero: dict) -> str:
    """The issue's sanity line: the fine-tuned model against itself before fine-tuning."""
    runs = [r for r in results if r['method'] == zero['method']]
    seed = zero['seed']
    same = next(r for r in runs if r['seed'] == seed)
    return (f'{zero["method"]} box AP50 after fine-tuning: {fmt([r["box_ap50"] for r in runs])} '
            f'(seed {seed}: {same["box_ap50"]:.2f}); the same seed-{seed} model before '
            f'fine-tuning (0 iterations: pre-trained backbone, initial heads): '
            f'{zero["box_ap50"]:.2f}'
            + (' (no detection above the score threshold)' if zero['no_detections'] else '')
            + '.')


def describe(args, data, runs) -> str:
    counts = data['counts']
    if args.checkpoints:
        what = 'given checkpoints (' + ', '.join(f'{m}: {len(p)}' for m, p in
                                                 args.given.items()) + ')'
    else:
        what = f'the pre-training runs of {args.pretrained} ({", ".join(runs)})'
    backbone, _ = backbone_of(next(iter(runs.values()))[0][0])
    embed, depth = vit_size(backbone)
    return (f'{data["root"]}: {len(data["classes"])} class(es) ({", ".join(data["classes"])}), '
            f'{counts["train"]["images"]} train images ({counts["train"]["instances"]} '
            f'instances) / {counts["test"]["images"]} test images ({counts["test"]["instances"]} '
            f'instances), median short side {data["median_short_side"]} px. Encoders: {what}; '
            f'ViT of {depth} blocks x {embed} dims, patch {backbone["patch_size"]}. Fine-tuning: '
            f'Mask R-CNN + simple feature pyramid ({args.neck_channels} channels) through mmdet '
            f'(derived from {args.finetune_config}), {args.finetune_iters} iterations of '
            f'{args.finetune_batch} images at short side {args.short_side} px (long side <= '
            f'{2 * args.short_side}, flips), AdamW lr {args.finetune_lr}, no validation '
            f'during training. {validation_text(args, data)}Test: CocoMetric box and mask AP on '
            f'the test split at the config\'s score threshold. Mean ± sd over seeds.')


def validation_text(args, data) -> str:
    if 'val' not in data['ann_files']:
        return ''
    where = (f'carved from train (--val-fraction {args.val_fraction}, seed {VAL_SEED}; training '
             f'used the remaining {data["counts"]["train"]["images"]})' if args.val_fraction
             else "the dataset's own")
    use = 'scored only to choose settings (--select)' if args.candidates else 'not used'
    return f'Validation: {data["counts"]["val"]["images"]} images, {where}, {use}. '


def write_report(args, data, runs, results, zero, timing, picture, selection=None) -> dict:
    comparisons = all_comparisons(results, METRICS)
    lines = chosen_text(selection) + [describe(args, data, runs), ''] + \
        results_table(results, zero) + \
        ['', trained_vs_untrained_heads(results, zero),
         '', 'Paired differences (per seed, mean, 95 % Student-t interval, verdict):', ''] + \
        comparison_table(comparisons, METRIC_NAMES) + \
        ['', 'Wall clock per stage (s): ' + ', '.join(f'{k} {v:.0f}' for k, v in timing.items())]
    settings = {k: v for k, v in vars(args).items() if k != 'given'}
    summary = dict(settings=settings, data={k: v for k, v in data.items()}, selection=selection,
                   results=results, zero_iterations=zero, paired=comparisons, timing_s=timing,
                   picture=picture,
                   encoders={m: [dict(config=c, checkpoint=p) for c, p in seeds]
                             for m, seeds in runs.items()},
                   torch=torch.__version__)
    write_results(args.out, summary, lines, args.first_seed)
    return summary


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach a log file at once
    args = parse_args(argv)
    quiet_mmengine()
    os.makedirs(args.out, exist_ok=True)
    timing, t0 = {}, time.time()
    data = validation_split(args, check_coco_folder(args.data))
    print(f'[data] {data["root"]}: classes {data["classes"]}, ' + ', '.join(
        f'{c["images"]} {s} images ({c["instances"]} instances)'
        for s, c in data['counts'].items()) + f'; images under {data["image_prefix"] or "./"}')
    runs = encoders(args)
    pretrain_iters = {m: [load_checkpoint_meta(p).get('iter') for _, p in seeds]
                      for m, seeds in runs.items()}
    timing['data and encoders'] = time.time() - t0
    t1 = time.time()
    selection = select_settings(args, data, runs)
    if selection:
        write_selection(args.out, selection, (
            f'Each candidate fine-tuned {selection["encoder"]} on '
            f'{data["counts"]["train"]["images"]} train images and was scored on '
            f'{selection["val_images"]} validation images.'))
        timing['selection on validation'] = time.time() - t1
    t1 = time.time()
    scores, zero = finetune_scores(args, data, runs)
    timing['fine-tuning'] = time.time() - t1
    t2 = time.time()
    shown = [m for m in ('baseline', 'repre') if m in runs] or list(runs)[:2]
    picture_path = osp.join(args.out, output_name('predictions', args.first_seed) + '.png')
    picture = prediction_picture(args, data, shown, picture_path)
    timing['picture'] = time.time() - t2
    timing['total'] = time.time() - t0
    results = merge(scores, pretrain_iters, args.first_seed)
    summary = write_report(args, data, runs, results, zero, timing, picture, selection)
    report = osp.join(args.out, output_name('results', args.first_seed) + '.md')
    print(f'total {timing["total"]:.0f} s; {report}; picture '
          f'{picture}')
    return summary


if __name__ == '__main__':  # python -m repre_mm.benchmarks.det_transfer: from a wheel install too
    main()
