"""Pre-training runs of a benchmark: the shipped small-scale configs, adapted to the data.

Every run is an ordinary mmpretrain config written to disk (``tools/train.py`` trains it as it
is): the shipped MoCo v3 / DINO baseline or RePre config of the tiny ViT, with the data's image
size, patch, channel statistics and view augmentations, the benchmark's length and seed.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Optional

from mmengine.config import Config

from ..utils.resources import shipped_config

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
EQUAL_COMPUTE = 'baseline_equal_compute'
METHODS = ('baseline', EQUAL_COMPUTE) + tuple(VARIANTS)


@dataclass
class ViewSpec:
    """What the views of a pre-training run take from the data.

    Args:
        img_size (int): side of the square crops (the ViT's training size).
        patch (int): the ViT's patch size.
        mean, std (list): RGB channel statistics, 0-255.
        colour (bool): colour jitter and grayscale for colour data, brightness / contrast only
            for grey.
        resize (bool): resize every image to img_size x img_size before cropping (small images
            of mixed sizes); False crops the images as they are.
        crop_scale (tuple, optional): RandomResizedCrop's area range (of the image); None:
            (0.2, 1) for colour, (0.3, 1) for grey data (MoCo v3), (0.4, 1) and (0.1, 0.4) for
            DINO's global and local crops.
    """
    img_size: int
    patch: int
    mean: List[float]
    std: List[float]
    colour: bool = True
    resize: bool = False
    crop_scale: Optional[tuple] = None


def views_for(spec: ViewSpec, size: int, crop_scale=None) -> list:
    """MoCo-v3-style view augmentations that follow the data."""
    crop_scale = crop_scale or spec.crop_scale or ((0.2, 1.) if spec.colour else (0.3, 1.))
    crop = dict(type='RandomResizedCrop', scale=size, crop_ratio_range=tuple(crop_scale),
                backend='pillow')
    if not spec.colour:
        return [crop,
                dict(type='RandomApply', prob=0.8,
                     transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)]),
                dict(type='RandomFlip', prob=0.5)]
    return [crop,
            dict(type='RandomApply', prob=0.8, transforms=[
                dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)]),
            dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
                 channel_weights=(0.114, 0.587, 0.299)),
            dict(type='RandomFlip', prob=0.5)]


def adapt_views(cfg: Config, spec: ViewSpec, backbone: dict) -> None:
    """Image size, patch, statistics and augmentations of ``cfg`` from ``spec``."""
    size = spec.img_size
    cfg.data_preprocessor.update(mean=spec.mean, std=spec.std)
    backbone.update(img_size=size, patch_size=spec.patch)
    load = dict(type='LoadImageOrSkip')
    resize = [dict(type='Resize', scale=(size, size))] if spec.resize else []
    train = cfg.train_dataloader.dataset.pipeline
    multiview = next(t for t in train if t.type == 'MultiView')
    if len(multiview.transforms) == 1:  # MoCo v3: two views of one kind
        multiview.transforms = [views_for(spec, size)]
    else:  # DINO: global + local crops, the local side scaled as 12 / 28 of the global one
        local = max(spec.patch * 2, round(size * 12 / 28 / spec.patch) * spec.patch)
        low, high = spec.crop_scale or (0.2, 1.)
        split = max(low, min(0.4, high / 2))  # (0.4, 1) and (0.1, 0.4) by default
        multiview.transforms = [views_for(spec, size, (split, high)),
                                views_for(spec, local, (low / 2, split))]
    cfg.train_dataloader.dataset.pipeline = [load] + resize + [multiview,
                                                               dict(type='PackInputs')]
    for key in ('knn_bank_dataloader', 'knn_query_dataloader'):
        if key in cfg:
            cfg[key].dataset.pipeline = [load] + resize + [dict(type='PackInputs')]


def apply_variant(cfg: Config, method: str, framework: str) -> None:
    """The change a RePre variant (see VARIANTS) makes to the shipped RePre config."""
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
        cfg.merge_from_dict(FRAMEWORKS[framework]['contrastive_off'])


def pretrain_config(framework: str, method: str, seed: int, epochs: int, batch_size: int,
                    spec: Optional[ViewSpec] = None, iters: Optional[int] = None,
                    log_interval: int = 10, levels: Optional[tuple] = None) -> Config:
    """The shipped config of ``method`` (a key of METHODS) for ``framework``, with ``spec``'s
    data adaptation (None: the config's own data), ``epochs`` epochs of ``batch_size`` (or, with
    ``iters``, the same schedule shape stretched over that many iterations) and ``seed``. The
    k-NN hook is dropped: benchmarks evaluate after training. ``levels``: RePre's tapped blocks
    instead of the config's."""
    if method not in METHODS:
        raise KeyError(f'unknown method {method!r}; choose from {METHODS}.')
    spec_paths = FRAMEWORKS[framework]
    is_baseline = method.startswith('baseline')
    cfg = Config.fromfile(shipped_config(spec_paths['baseline' if is_baseline else 'repre']))
    if not is_baseline:
        apply_variant(cfg, method, framework)
        if levels is not None:
            cfg.model.levels = tuple(levels)
    if spec is not None:
        backbone = cfg.model.backbone if is_baseline else cfg.model.framework.backbone
        adapt_views(cfg, spec, backbone)
    cfg.train_dataloader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    cfg.randomness = dict(seed=seed)
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNEvaluationHook']
    cfg.default_hooks.logger.interval = log_interval
    warmup = max(epochs / 10, 0.5)  # 10% of the run, at least half an epoch
    for scheduler in cfg.param_scheduler:
        if scheduler.type == 'LinearLR':
            scheduler.end = warmup
        elif scheduler.type == 'CosineAnnealingLR':
            scheduler.update(begin=warmup, T_max=epochs - warmup, end=epochs)
        else:
            scheduler.update(T_max=epochs, end=epochs)
    if iters is None:
        cfg.train_cfg.max_epochs = epochs
        cfg.default_hooks.checkpoint.interval = epochs
    else:  # the same schedule shape, stretched over ``iters`` iterations
        scale = iters / epochs
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters)
        cfg.default_hooks.checkpoint.update(interval=iters, by_epoch=False)
        cfg.log_processor = dict(cfg.get('log_processor', {}), by_epoch=False)
        for scheduler in cfg.param_scheduler:
            scheduler.update(by_epoch=False, convert_to_iter_based=False)
            for key in ('begin', 'end', 'T_max'):
                if key in scheduler:
                    scheduler[key] = round(scheduler[key] * scale)
    return cfg


def dump_config(cfg: Config, path: str) -> str:
    os.makedirs(osp.dirname(path), exist_ok=True)
    cfg.dump(path)
    return path


def train_job_command(config: str, work_dir: str) -> List[str]:
    from .runs import tool
    return tool('train.py') + [config, '--work-dir', work_dir]


# --- running them ------------------------------------------------------------------------------
def run_name(method: str, seed: int) -> str:
    return f'{method}_seed{seed}'


def pretrain_jobs(out: str, runs, write_config, total_iters=None) -> list:
    """Jobs that pre-train ``runs``: (method, seed, iters) with iters None (the configured
    epochs), a number, or a function called when the run starts (the equal-compute length,
    known once the runs it is timed against have finished: such a run waits for every baseline
    and RePre run of ``runs`` listed before it).

    ``write_config(method, seed, iters) -> config path`` writes the run's config. A run whose
    checkpoint exists and whose config text is unchanged is reused."""
    from .runs import Job, checkpoint_of
    jobs, timed = [], []
    for method, seed, iters in runs:
        name = run_name(method, seed)
        work_dir = osp.join(out, name)

        def prepare(method=method, seed=seed, iters=iters, work_dir=work_dir):
            length = iters() if callable(iters) else iters
            config = osp.join(out, 'configs', f'{run_name(method, seed)}.py')
            previous = open(config).read() if osp.exists(config) else None
            write_config(method, seed, length)
            if previous == open(config).read() and checkpoint_of(work_dir):
                return None
            return train_job_command(config, work_dir)

        def total(method=method, iters=iters):
            if total_iters is None:
                return None
            return total_iters(iters() if callable(iters) else iters)

        jobs.append(Job(name, work_dir, prepare, total,
                        after=list(timed) if callable(iters) else ()))
        if method in ('baseline', 'repre') and not callable(iters):
            timed.append(name)
    return jobs


def run_pretraining(out: str, runs, write_config, parallel: int = 2, total_iters=None) -> dict:
    """Trains ``runs`` (see :func:`pretrain_jobs`); returns {(method, seed): wall seconds} in the
    order of ``runs``."""
    from .runs import run_jobs
    walls = run_jobs(pretrain_jobs(out, runs, write_config, total_iters), out, parallel)
    return {(m, s): walls[run_name(m, s)] for m, s, _ in runs}


def equal_compute_length(out: str, seeds) -> tuple:
    """(iterations, time ratio) of the equal-compute baseline, from the finished baseline and
    RePre runs of ``seeds``."""
    from .runs import equal_compute_iters
    return equal_compute_iters([osp.join(out, run_name('baseline', s)) for s in seeds],
                               [osp.join(out, run_name('repre', s)) for s in seeds])


def equal_compute_schedule(out: str, seeds) -> tuple:
    """(length, info) for the equal-compute runs of a queue: ``length()`` measures the
    iterations once, when the first equal-compute run starts, from the baseline and RePre runs
    of ``seeds``; ``info`` then holds them and the time ratio."""
    info = {}

    def length():
        if not info:
            info['iters'], info['time_ratio'] = equal_compute_length(out, seeds)
            print(f'[train] RePre / baseline time per iteration: {info["time_ratio"]:.3f}; the '
                  f'equal-compute baseline trains {info["iters"]} iterations')
        return info['iters']

    return length, info


def plan_pretraining(out: str, methods, seeds, write_config, parallel: int = 2,
                     total_iters=None) -> tuple:
    """Trains ``methods`` x ``seeds`` in one queue: the baseline and RePre runs, the
    equal-compute baselines, then the RePre variants. An equal-compute run starts once the
    runs it is timed against have finished; until then the variants take the free cores.
    Returns (walls, equal-compute info)."""
    main = ('baseline', 'repre')
    length, info = equal_compute_schedule(out, seeds)
    queue = [(m, s, None) for s in seeds for m in main if m in methods]
    queue += [(EQUAL_COMPUTE, s, length) for s in seeds if EQUAL_COMPUTE in methods]
    queue += [(m, s, None) for s in seeds for m in methods if m not in main + (EQUAL_COMPUTE, )]
    return run_pretraining(out, queue, write_config, parallel, total_iters), info
