"""Train a model from a config: RePre / baseline pre-training, linear probe, fine-tuning, and
mmdet / mmseg downstream configs. Flags follow mmpretrain's tools/train.py."""
import argparse
import os

import repre_mm  # noqa: F401,I001  (first: its compat patches precede torchvision's import)
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from repre_mm.utils.launch import (adapt_to_machine, check_data_paths, default_work_dir,
                                   set_dataloader_defaults)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint; without a path, from the latest checkpoint in the '
        'work directory (if any)')
    parser.add_argument(
        '--amp', action='store_true',
        help='mixed precision: fp16 with dynamic loss scaling on GPU (or --amp-dtype '
        'bfloat16), bf16 autocast on CPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default='float16',
                        help='the GPU autocast dtype with --amp')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by actual batch size / auto_scale_lr.base_batch_size')
    parser.add_argument('--no-pin-memory', action='store_true')
    parser.add_argument('--no-persistent-workers', action='store_true')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs, e.g. '
        'train_dataloader.batch_size=64 model.levels="(2,5,8,11)"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def merge_args(cfg, args):
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None
    cfg.launcher = args.launcher
    # work_dir priority: CLI > config > config file name
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)

    if args.amp:
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.dtype = args.amp_dtype
            if args.amp_dtype == 'float16':
                cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:
            cfg.optim_wrapper.type = 'BF16AutocastOptimWrapper'
            cfg.optim_wrapper.pop('loss_scale', None)

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise ValueError('--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=N)` in '
                             'the config: the batch size its learning rate was tuned for.')
        cfg.auto_scale_lr.enable = True

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_dataloader_defaults(cfg, args.no_pin_memory, args.no_persistent_workers)
    adapt_to_machine(cfg)
    check_data_paths(cfg)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(Config.fromfile(args.config), args)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
