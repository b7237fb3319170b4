"""What the transfer benchmarks (seg_transfer, det_transfer) share: the encoders given as
checkpoints, the backbone of a pre-training config, the fine-tuning jobs run through
tools/benchmarks/transfer.sh, and the comparisons of the report (positive controls first)."""
import copy
import hashlib
import os
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import Config

from ..utils.checkpoint import load_checkpoint_meta
from .pretrain import EQUAL_COMPUTE, run_name
from ..utils.resources import shipped_tool
from .runs import Job, file_key, read_json, write_json
from .stats import compare

UNTRAINED = 'untrained'  # the untrained encoder (probe) / random initialisation (fine-tuning)
# --quick's defaults that both benchmarks share; each adds its own sizes
QUICK_DEFAULTS = dict(seeds=2, finetune_iters=4, finetune_batch=2, picture_images=2)


def set_quick_defaults(parser, argv: Sequence[str], **own) -> None:
    """With --quick in argv: the smaller defaults (options given explicitly still win)."""
    if '--quick' in argv:
        parser.set_defaults(**{**QUICK_DEFAULTS, **own})


# --- the encoders ----------------------------------------------------------------------------
def add_first_seed(parser) -> None:
    """--first-seed: confirm a variant chosen on seeds 0-2 on fresh seeds, the report pairing
    those alone."""
    parser.add_argument('--first-seed', type=int, default=0,
                        help='seeds are --first-seed .. --first-seed + --seeds - 1 (the i-th '
                        'of --checkpoints is seed --first-seed + i). Confirm a variant chosen '
                        'on seeds 0-2 on fresh ones: --first-seed 3; finished runs are reused')


def parse_checkpoints(parser, items: List[str]) -> Dict[str, List[str]]:
    """{method: [path per seed]} of ``--checkpoints METHOD=PATH ...``."""
    given: Dict[str, List[str]] = {}
    for item in items:
        method, sep, path = item.partition('=')
        if not sep or not method or not path:
            parser.error(f'--checkpoints takes METHOD=PATH items; got {item!r}.')
        if method == UNTRAINED:
            parser.error(f'{UNTRAINED!r} is the reference this benchmark adds itself.')
        if not osp.isfile(path):
            parser.error(f'--checkpoints {item}: {path} is not a file.')
        given.setdefault(method, []).append(path)
    return given


def pretrain_config_of(args, checkpoint: str) -> str:
    """--pretrain-config, or the config mmengine stored in ``checkpoint`` (written next to the
    benchmark's outputs)."""
    if args.pretrain_config:
        return args.pretrain_config
    text = load_checkpoint_meta(checkpoint).get('cfg')
    if not text:
        raise SystemExit(f'{checkpoint} stores no config (not an mmengine training checkpoint): '
                         f'pass --pretrain-config, the config that trained it.')
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = osp.join(args.out, 'given_configs', f'{digest}.py')
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return path


def backbone_of(config: str) -> tuple:
    """(backbone dict, dict(mean, std) of the data preprocessor) of a pre-training config."""
    cfg = Config.fromfile(config)
    return copy.deepcopy(cfg.model.get('framework', cfg.model).backbone.to_dict()), \
        dict(mean=list(cfg.data_preprocessor.mean), std=list(cfg.data_preprocessor.std))


def vit_size(backbone: dict) -> tuple:
    """(embed dims, depth) of a ViT backbone dict: its arch dict or mmpretrain's named arch."""
    arch = backbone['arch']
    if isinstance(arch, dict):
        return arch['embed_dims'], arch['num_layers']
    from mmpretrain.models import VisionTransformer
    settings = VisionTransformer.arch_zoo[arch]
    return settings['embed_dims'], settings['num_layers']


def finetune_backbone(pretrain_cfg: str, checkpoint: Optional[str], img_size: tuple,
                      out_indices: Callable[[int], tuple]) -> tuple:
    """The backbone of a fine-tuning config derived from a pre-training config: the same
    module (the pre-training key layout) as mmpretrain's, feature maps of the blocks
    ``out_indices(depth)``, no drop path, loaded strictly from ``checkpoint`` (what transfer.sh
    writes: the pre-trained encoder, or from scratch its initial weights; None: no loading).

    Returns:
        tuple: (backbone dict, dict(mean, std) of the pre-training, embed dims, depth).
    """
    backbone, norm = backbone_of(pretrain_cfg)
    embed, depth = vit_size(backbone)
    backbone.pop('frozen_stages', None)
    backbone.update(type='mmpretrain.' + backbone['type'].split('.')[-1], img_size=img_size,
                    out_type='featmap', out_indices=out_indices(depth), drop_path_rate=0.0,
                    init_cfg=dict(type='Pretrained', checkpoint=checkpoint,
                                  prefix='backbone.', strict=True) if checkpoint else None)
    if 'stop_grad_conv1' in backbone:
        backbone['stop_grad_conv1'] = False  # a pre-training trick, not for fine-tuning
    return backbone, norm, embed, depth


def set_iteration_schedule(cfg: Config, args, seed: int,
                           decay: Callable[[int, int], dict]) -> None:
    """``--finetune-iters`` iterations at ``--finetune-lr``: a linear warm-up over the first
    tenth, then ``decay(iters, warmup)`` (a scheduler dict); no validation (the test split is
    only read by tools/test.py after training); the seed of the run."""
    cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
    iters = args.finetune_iters
    warmup = max(1, iters // 10)
    cfg.optim_wrapper.optimizer.lr = args.finetune_lr
    cfg.param_scheduler = [
        # end = warmup + 1: LinearLR reaches the full lr at its last step (end - 1); with
        # end=warmup it stops a step short, at the start factor for a 1-step warm-up
        dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=warmup + 1),
        decay(iters, warmup)]
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters + 1)
    cfg.default_hooks.logger.interval = 1 if args.quick else 10
    cfg.randomness = dict(seed=seed)


# --- fine-tuning jobs ------------------------------------------------------------------------
def config_key(config: str, checkpoint: Optional[str]) -> dict:
    """What a finished run is reused for: the derived config's bytes and the checkpoint's."""
    with open(config, 'rb') as f:
        return dict(config=hashlib.sha256(f.read()).hexdigest(),
                    checkpoint=file_key(checkpoint) if checkpoint else None)


def finetune_jobs(args, runs: Dict[str, List[tuple]],
                  write_config: Callable[[str, int, str, Optional[str]], str],
                  first_seed: int = 0, with_untrained: bool = True) -> tuple:
    """A fine-tuning job per encoder and seed, and one from random weights per seed
    (``untrained``), each a tools/benchmarks/transfer.sh call that exports the backbone (from
    scratch: writes its initial weights), loads it strictly, trains with tools/train.py and
    writes tools/test.py's metrics to <work_dir>/metrics.json. Every run thus fine-tunes the same
    module with the same trainable parameters; only the initial weights differ. A job whose
    metrics exist for the same config and checkpoint is reused.

    The i-th run of a method is seed ``first_seed + i``. ``with_untrained=False``: the given
    encoders only (choosing settings on validation needs no reference).

    ``write_config(pretrain_config, seed, name, backbone_export)`` writes the derived
    config and returns its path. All configs are written here, before any job starts, so no
    job rewrites a config another job is reading.

    Returns:
        tuple: (jobs, {(method, seed): metrics path}).
    """
    jobs, where = [], {}
    untrained = [(config, None) for config, _ in runs[next(iter(runs))]]
    references = [(UNTRAINED, untrained)] if with_untrained else []
    for method, seeds in list(runs.items()) + references:
        for seed, (config, checkpoint) in enumerate(seeds, start=first_seed):
            name = run_name(method, seed)
            work_dir = osp.join(args.out, 'finetune', name)
            metrics = osp.join(work_dir, 'metrics.json')
            where[(method, seed)] = metrics
            # from scratch too: transfer.sh writes the backbone's initial weights there
            # (initial_backbone.py), loaded as strictly as a pre-trained export
            export = osp.abspath(osp.join(work_dir, 'backbone.pth'))
            path = write_config(config, seed, name, export)

            def prepare(path=path, checkpoint=checkpoint, work_dir=work_dir, metrics=metrics):
                key = config_key(path, checkpoint)
                key_file = osp.join(work_dir, 'finetune_key.json')
                if osp.exists(metrics) and read_json(key_file) == key:
                    return None
                if osp.exists(metrics):
                    os.remove(metrics)
                write_json(key_file, key)
                return ['bash', shipped_tool('benchmarks', 'transfer.sh'),
                        'custom', osp.abspath(checkpoint) if checkpoint else 'none', '1']

            env = dict(CONFIG=path, WORK_DIR=work_dir, PYTHON=sys.executable,
                       TEST_ARGS=f'--out {metrics} --out-item metrics')
            jobs.append(Job(name, work_dir, prepare, args.finetune_iters, env=env))
    return jobs, where


def run_metrics(path: str, run: str, out: str) -> dict:
    """The metrics a fine-tuning (or test) run wrote to ``path``; an error naming the run and
    where its log is when it wrote none."""
    metrics = read_json(path)
    if metrics is None:
        raise RuntimeError(f'{path} is missing: the run of {run} wrote no metrics (see its log '
                           f'under {out}/finetune).')
    return metrics


# --- report ----------------------------------------------------------------------------------
def all_comparisons(results: List[dict], metrics: Sequence[str]) -> Dict[str, dict]:
    """The positive controls first (does pre-training beat no pre-training? every comparison
    relies on it), then every RePre method against the baseline and the equal-compute
    baseline: {name: compare(...)} over ``metrics``."""
    methods = list(dict.fromkeys(r['method'] for r in results))
    comparisons = {}
    for method in methods:
        if method.startswith('baseline'):
            diff = compare(results, method, UNTRAINED, metrics)
            if diff:
                comparisons[f'{method} - untrained'] = diff
    for method in methods:
        if method.startswith('baseline') or method == UNTRAINED:
            continue
        for against in ('baseline', EQUAL_COMPUTE):
            diff = compare(results, method, against, metrics)
            if diff:
                suffix = ' (equal compute)' if against == EQUAL_COMPUTE else ''
                comparisons[f'{method} - baseline{suffix}'] = diff
    return comparisons


# --- picture ---------------------------------------------------------------------------------
def write_picture_grid(rows: List[List[np.ndarray]], titles: List[str], path: str,
                       font_scale: float = 0.5) -> str:
    """Write ``rows`` of RGB cells (each row's cells of one height) as one PNG at ``path``,
    a white header of ``titles`` over the columns (placed by the first row's cell widths) and
    4 white pixels between rows."""
    import cv2
    rows = [(np.concatenate(cells, 1), [c.shape[1] for c in cells]) for cells in rows]
    width = max(r.shape[1] for r, _ in rows)
    header = np.full((28, width, 3), 255, np.uint8)
    x = 0
    for title, cell_width in zip(titles, rows[0][1]):
        cv2.putText(header, title, (x + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    1, cv2.LINE_AA)
        x += cell_width
    stacked = [header] + [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)),
                                 constant_values=255) for r, _ in rows]
    cv2.imwrite(path, np.concatenate(stacked)[..., ::-1])
    return path


def output_name(stem: str, first_seed: int) -> str:
    """``results`` for seeds 0.., ``results_from_seed3`` for --first-seed 3: a confirmation on
    fresh seeds in the same --out never overwrites the report it confirms."""
    return stem if first_seed == 0 else f'{stem}_from_seed{first_seed}'


def write_results(out: str, summary: dict, lines: List[str], first_seed: int = 0) -> str:
    """<out>/results.json (``summary``) and <out>/results.md (``lines``; ``results_from_seed<n>``
    with a first seed n > 0), also printed. Returns the .md path."""
    name = osp.join(out, output_name('results', first_seed))
    write_json(name + '.json', summary)
    with open(name + '.md', 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n' + '\n'.join(lines) + '\n')
    return name + '.md'
