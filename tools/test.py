"""Evaluate a checkpoint with a config's test_dataloader / test_evaluator (mmpretrain, mmdet or
mmseg configs). Flags follow mmpretrain's tools/test.py."""
import argparse
import os

import repre_mm  # noqa: F401,I001  (first: its compat patches precede torchvision's import)
import mmengine
from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from repre_mm.utils.launch import (adapt_to_machine, check_data_paths, default_work_dir,
                                   set_dataloader_defaults)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation logs')
    parser.add_argument('--out', help='the file to write the test results to (see --out-item)')
    parser.add_argument(
        '--out-item', choices=['pred', 'metrics'], default='pred',
        help='what --out holds: the predictions (pickle, the default) or the evaluation '
        'metrics (JSON / YAML / pickle by the file extension), as in mmpretrain')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = default_work_dir(args.config)
    cfg.load_from = args.checkpoint
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    set_dataloader_defaults(cfg)
    adapt_to_machine(cfg)
    check_data_paths(cfg, fields=('test_dataloader', ))

    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out and args.out_item == 'pred':
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)
    print(metrics)


if __name__ == '__main__':
    main()
