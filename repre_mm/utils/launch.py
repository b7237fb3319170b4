"""Config preparation shared by ``tools/train.py`` and ``tools/test.py``.

The flags and their meaning follow mmpretrain's tools; the same tools also run mmdet and mmseg
configs (downstream transfer), whose dataloaders keep their own collate functions.
"""
import logging
import os
import os.path as osp
from copy import deepcopy

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from .. import compat


def uses_mmpretrain_scope(cfg: Config) -> bool:
    return cfg.get('default_scope', 'mmpretrain') == 'mmpretrain'


def set_dataloader_defaults(cfg: Config, no_pin_memory=False, no_persistent_workers=False):
    """mmpretrain's defaults: default_collate (multi-view inputs need it), pinned memory where a
    GPU exists, persistent workers. mmdet / mmseg configs keep their own collate function."""
    defaults = ConfigDict(pin_memory=torch.cuda.is_available(), persistent_workers=True)
    if uses_mmpretrain_scope(cfg):
        defaults.collate_fn = dict(type='default_collate')
    for field in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(field, None) is None:
            continue
        loader = deepcopy(defaults)
        loader.update(cfg[field])
        if no_pin_memory:
            loader.pin_memory = False
        if no_persistent_workers or loader.get('num_workers', 0) == 0:
            # persistent_workers with num_workers=0 is an error in torch's DataLoader.
            loader.persistent_workers = False
        cfg[field] = loader


def adapt_to_machine(cfg: Config) -> None:
    """Make a GPU recipe run where there is no GPU, loudly: AMP (CUDA fp16) falls back to fp32,
    SyncBN is reverted by mmengine itself outside distributed runs, and CPU DDP uses gloo."""
    if torch.cuda.is_available():
        return
    optim = cfg.get('optim_wrapper')
    if optim is not None and optim.get('type') == 'AmpOptimWrapper':
        print_log('no CUDA device: the config asks for AmpOptimWrapper (CUDA fp16); training in '
                  'fp32 with OptimWrapper. Pass --amp for bf16 autocast on CPU.',
                  logger='current', level=logging.WARNING)
        optim.type = 'OptimWrapper'
        optim.pop('loss_scale', None)
    if cfg.get('launcher', 'none') != 'none':
        cfg.setdefault('env_cfg', ConfigDict()).setdefault('dist_cfg', ConfigDict())
        cfg.env_cfg.dist_cfg.backend = 'gloo'
        compat.cpu_model_wrapper_cfg(cfg)


def check_data_paths(cfg: Config, fields=('train_dataloader', 'val_dataloader')) -> None:
    """Fail before anything is built when the data_root of a dataloader the run will use is
    missing or empty, saying which config key to change (the datasets would fail later, naming
    only the path)."""
    for field in fields:
        dataset = (cfg.get(field) or {}).get('dataset', {})
        root = dataset.get('data_root') if isinstance(dataset, dict) else None
        if not root:
            continue
        problem = ('does not exist' if not osp.isdir(root) else
                   'is empty' if not os.listdir(root) else None)
        if problem:
            raise FileNotFoundError(
                f'{field}.dataset.data_root={root!r} {problem}. Put the dataset there or pass '
                f'--cfg-options {field}.dataset.data_root=/path/to/data.')


def default_work_dir(config_path: str) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
