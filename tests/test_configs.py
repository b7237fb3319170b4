"""Every shipped pre-training config builds, and a shrunk copy trains one Runner iteration."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmpretrain.registry import MODELS
from helpers import shrink_pretrain_cfg, write_images

ROOT = osp.dirname(osp.dirname(__file__))
PRETRAIN = sorted(glob.glob(osp.join(ROOT, 'configs/repre/**/*.py'), recursive=True) +
                  glob.glob(osp.join(ROOT, 'configs/baselines/*.py')))


def test_there_are_pretrain_configs():
    names = [osp.basename(p) for p in PRETRAIN]
    assert 'repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py' in names
    assert 'repre_mocov3_vit-base-p16_16xb256-amp-coslr-300e_in1k.py' in names
    assert len([n for n in names if 'levels' in n or 'lambda' in n or 'loss-l2' in n]) == 6
    for framework in ('simclr_vit-small', 'byol_vit-small', 'mocov3_swin-tiny',
                      'dino_vit-small-p16_16xb64-amp-coslr-100e',
                      'dino_vit-small-p16_16xb64-amp-coslr-300e'):
        assert len([n for n in names if framework in n]) == 2  # RePre and its baseline


@pytest.mark.parametrize('path', PRETRAIN, ids=lambda p: osp.relpath(p, ROOT))
def test_config_builds_full_size(path):
    cfg = Config.fromfile(path)
    # checkpoints written atomically, by the component (tests/test_atomic_checkpoint_hook.py)
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    model = MODELS.build(cfg.model)
    if cfg.model.type == 'RePre':
        # one diff apart: the RePre config's framework is its baseline's model
        assert cfg.model.framework.type in ('MoCoV3', 'SimCLR', 'BYOL', 'DINO')
        assert 'decoder' in dict(model.named_children())
    params = sum(p.numel() for p in model.backbone.parameters())
    assert params > 1e5


@pytest.mark.parametrize('path', PRETRAIN, ids=lambda p: osp.relpath(p, ROOT))
def test_shrunk_config_trains_one_iteration(path, tmp_path):
    """Shrunk: model width, crops, batch, data. Kept: the recipe's custom_hooks, which run.
    Changed because a CPU cannot run it: AmpOptimWrapper (CUDA fp16) -> OptimWrapper (fp32)."""
    data = write_images(str(tmp_path / 'images'), num=1, with_classes=True)  # 2 images
    recipe = Config.fromfile(path)
    cfg = shrink_pretrain_cfg(Config.fromfile(path), data, str(tmp_path / 'work'))
    hook_types = [h['type'] for h in recipe.get('custom_hooks', [])]
    assert [h['type'] for h in cfg.get('custom_hooks', [])] == hook_types
    assert {'NonFiniteLossHook', 'RandomStateCheckpointHook'} <= set(hook_types)
    if recipe.optim_wrapper.type == 'AmpOptimWrapper':
        assert cfg.optim_wrapper.type == 'OptimWrapper'
    else:
        assert cfg.optim_wrapper.type == recipe.optim_wrapper.type
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert set(hook_types) <= {type(h).__name__ for h in runner.hooks}
    logged = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(logged['train/loss'].current()))
    if cfg.model.type == 'RePre':
        assert logged['train/loss_rec'].current() > 0
    checkpoint = osp.join(cfg.work_dir, 'epoch_1.pth')
    # the recipe's hooks ran: the random state is in the checkpoint, k-NN evaluated, DINO's
    # teacher temperature was set by DINOTeacherTempHook
    assert 'random_state' in torch.load(checkpoint, weights_only=False)
    for hook in runner.hooks:
        if type(hook).__name__ == 'KNNEvaluationHook':
            assert [epoch for epoch, _ in hook.history] == [1]
        if type(hook).__name__ == 'DINOTeacherTempHook':
            assert runner.model.head.teacher_temp == hook.temperature(0)
