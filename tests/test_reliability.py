"""Failure handling: non-finite losses, strict checkpoint loading."""
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from mmpretrain.registry import HOOKS, MODELS
from repre_mm.utils.checkpoint import load_strict, load_weights
from helpers import shrink_pretrain_cfg, tiny_repre, tiny_vit, write_images

ROOT = osp.dirname(osp.dirname(__file__))
TINY = osp.join(ROOT, 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')


@HOOKS.register_module()
class _InjectNaN(Hook):
    """Test only: makes the reconstruction loss NaN at the given iterations."""
    priority = 'HIGHEST'

    def __init__(self, iters):
        self.iters = iters

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        model.rec_head.loss_weight = math.nan if runner.iter in self.iters else 1.0


def _runner(tmp_path, action, nan_iters, epochs=1):
    images = write_images(str(tmp_path / 'img'), num=8, size=28)
    cfg = shrink_pretrain_cfg(Config.fromfile(TINY), images, str(tmp_path / 'work'), img=28)
    cfg.train_cfg.max_epochs = epochs  # 8 images, batch 2: 4 iterations an epoch
    cfg.custom_hooks = [dict(type='NonFiniteLossHook', action=action),
                        dict(type='_InjectNaN', iters=nan_iters)]
    return Runner.from_cfg(cfg)


def test_non_finite_loss_stops_before_the_update_naming_term_and_iteration(tmp_path):
    runner = _runner(tmp_path, 'stop', nan_iters=[2])
    with pytest.raises(FloatingPointError, match=r'non-finite loss_rec at iteration 3'):
        runner.train()
    assert runner.iter == 2  # two good steps, the third stopped
    assert not osp.exists(osp.join(runner.work_dir, 'epoch_1.pth'))


def test_non_finite_loss_skip_leaves_the_weights_unchanged_and_goes_on(tmp_path):
    runner = _runner(tmp_path, 'skip', nan_iters=[1])
    snapshots = {}

    @HOOKS.register_module(force=True)
    class _Snapshot(Hook):
        priority = 'LOWEST'

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            snapshots[runner.iter] = {k: v.clone() for k, v in
                                      runner.model.state_dict().items() if 'backbone' in k}

    runner.register_hook(_Snapshot())
    runner.train()
    [guard] = [h for h in runner.hooks if type(h).__name__ == 'NonFiniteLossHook']
    assert guard.skipped == 1 and runner.iter == 4
    # the skipped step (iteration index 1) changed no weight; the good ones did
    assert all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[1])
    assert not all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2])
    for v in runner.model.state_dict().values():
        assert torch.isfinite(v.float()).all()


def test_loading_a_mismatched_backbone_is_an_error_listing_keys(tmp_path):
    repre = MODELS.build(tiny_repre())
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': repre.state_dict()}, path)
    state = load_weights(path)
    load_strict(MODELS.build(tiny_vit()), state, prefix='backbone.')  # matches: no error
    wider = MODELS.build(tiny_vit(depth=6))
    with pytest.raises(KeyError, match=r'missing keys \[\'layers\.4\.'):
        load_strict(wider, state, prefix='backbone.')
    with pytest.raises(KeyError, match="no key starting with 'encoder.'"):
        load_strict(wider, state, prefix='encoder.')


def test_checkpoints_with_code_are_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': print}, path)
    with pytest.raises(Exception, match='Unsupported global'):
        load_weights(path)


OUR_ERRORS = ('out of range', 'shallow to deep', 'non-empty', 'one entry per x2 upsampling',
              'not divisible by the encoder stride', 'power of two')


@pytest.mark.parametrize('seed', range(30))
def test_random_configs_run_or_fail_with_our_errors(seed):
    """Random levels, widths, patch and input sizes: one step runs, or one of our messages."""
    import random
    from helpers import tiny_mocov3
    rng = random.Random(seed)
    patch = rng.choice([2, 4, 8, 16])
    depth = rng.randint(2, 5)
    levels = tuple(rng.sample(range(-depth - 1, depth + 1), rng.randint(1, 3)))
    if rng.random() < 0.7:
        levels = tuple(sorted(set(l % depth for l in levels)))  # mostly valid levels
    points = int(math.log2(patch))
    widths = None if rng.random() < 0.5 else [
        rng.choice([8, 16]) for _ in range(points + rng.choice([0, 0, 1, -1]))]
    size = [rng.choice([16, 24, 32, 36, 40]) for _ in range(2)]
    framework = tiny_mocov3(img_size=32, patch_size=patch, depth=depth, dims=16)
    cfg = tiny_repre(levels=levels, framework=framework,
                     decoder=dict(type='MultiLevelFusionDecoder', widths=widths,
                                  upsample=rng.choice(['pixel_shuffle', 'deconv', 'bilinear'])))
    try:
        model = MODELS.build(cfg)
        views = [torch.randn(2, 3, *size), torch.randn(2, 3, *size)]
        losses = model.loss(views, None)
    except (ValueError, KeyError, TypeError) as error:
        assert any(phrase in str(error) for phrase in OUR_ERRORS), repr(error)
        return
    assert torch.isfinite(losses['loss_rec']) and losses['loss_rec'] > 0


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    from mmpretrain.datasets import CustomDataset
    folder = write_images(str(tmp_path / 'img'), num=3, size=16)
    bad = osp.join(folder, '1.jpg')
    with open(bad, 'wb') as f:
        f.write(b'not a jpeg')

    def dataset(skip):
        return CustomDataset(data_root=folder, with_label=False, pipeline=[
            dict(type='LoadImageOrSkip', skip_unreadable=skip), dict(type='PackInputs')])

    strict = dataset(False)
    index = [i for i in range(3) if strict.get_data_info(i)['img_path'] == bad][0]
    with pytest.raises(OSError, match=r'cannot read image .*1\.jpg'):
        strict[index]
    lenient = dataset(True)
    sample = lenient[index]  # another, readable image instead
    assert sample['inputs'].shape == (3, 16, 16)
    # at least this one skip (the dataset's random re-draw may hit the bad file again)
    assert lenient.pipeline.transforms[0].skipped >= 1
