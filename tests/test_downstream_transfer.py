"""Downstream configs with a RePre backbone: strict, complete loading; train and test passes.

The recipes are shrunk to a tiny ViT (4 blocks, 64 channels, patch 16) whose weights come from a
RePre checkpoint written here; the data are tiny COCO / ADE20K sets in the real formats.
"""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers import tiny_ade20k, tiny_coco, tiny_mocov3, tiny_repre

ROOT = osp.dirname(osp.dirname(__file__))
DET = sorted(glob.glob(osp.join(ROOT, 'configs/downstream/mmdet/*.py')))
SEG = sorted(glob.glob(osp.join(ROOT, 'configs/downstream/mmseg/*.py')))
ARCH = dict(embed_dims=64, num_layers=4, num_heads=4, feedforward_channels=128)


@pytest.fixture(scope='module')
def repre_checkpoint(tmp_path_factory):
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(tiny_repre(framework=tiny_mocov3(img_size=64, patch_size=16)))
    model.init_weights()
    path = str(tmp_path_factory.mktemp('repre') / 'epoch_1.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), path)
    return path, {k[len('backbone.'):]: v for k, v in model.state_dict().items()
                  if k.startswith('backbone.')}


def shrink(cfg, checkpoint):
    """The recipe with the tiny ViT of the checkpoint (same key layout, smaller sizes)."""
    backbone = cfg.model.backbone
    backbone.update(arch=ARCH, img_size=64, drop_path_rate=0.0)
    backbone.init_cfg.checkpoint = checkpoint
    if cfg.model.neck.type == 'SimpleFeaturePyramid':
        backbone.out_indices = (3, )
        cfg.model.neck.in_channels = 64
    else:
        backbone.out_indices = (0, 1, 2, 3)
        cfg.model.neck.update(in_channels=[64] * 4, out_channels=64)
        cfg.model.decode_head.update(in_channels=[64] * 4, channels=32)
        cfg.model.auxiliary_head.update(in_channels=64, channels=16)
    return cfg


def _build(cfg):
    scope = cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
        return registry.build(cfg.model)


@pytest.mark.parametrize('path', DET + SEG, ids=lambda p: osp.relpath(p, ROOT))
def test_backbone_receives_every_pretrained_weight(path, repre_checkpoint):
    checkpoint, expected = repre_checkpoint
    full = Config.fromfile(path)
    assert full.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='',
                                                prefix='backbone.', strict=True)
    _build(full)  # the full-size recipe builds
    model = _build(shrink(Config.fromfile(path), checkpoint))
    model.init_weights()
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(expected)  # zero missing, zero unexpected
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def _tools(args):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2')
    out = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    return out.stdout + out.stderr


def _write(cfg, path):
    cfg.dump(path)
    return path


def test_mask_rcnn_with_repre_backbone_trains_and_tests(tmp_path, repre_checkpoint):
    checkpoint, _ = repre_checkpoint
    root = tiny_coco(str(tmp_path / 'coco'))
    cfg = shrink(Config.fromfile(DET[0] if 'small' in DET[0] else DET[-1]), checkpoint)
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='Resize', scale=(256, 256), keep_ratio=True)]
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].update(batch_size=1, num_workers=0, persistent_workers=False)
        cfg[key].dataset.update(data_root=root, ann_file='ann.json', data_prefix=dict(img='img/'),
                                metainfo=dict(classes=('person', 'bicycle')))
    cfg.train_dataloader.dataset.pipeline = pipeline + [dict(type='PackDetInputs')]
    cfg.test_dataloader.dataset.pipeline = pipeline + [dict(
        type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                         'scale_factor'))]
    cfg.val_dataloader = cfg.test_dataloader
    for key in ('val_evaluator', 'test_evaluator'):
        cfg[key].ann_file = osp.join(root, 'ann.json')
    cfg.train_cfg.max_epochs = 1
    cfg.default_hooks.logger.interval = 1
    cfg.model.test_cfg.rcnn.score_thr = 0.0  # an untrained head: keep every detection
    cfg.model.roi_head.bbox_head.num_classes = cfg.model.roi_head.mask_head.num_classes = 2
    path = _write(cfg, str(tmp_path / 'det.py'))
    log = _tools(['tools/train.py', path, '--work-dir', str(tmp_path / 'work'), '--no-validate'])
    assert 'loss_mask' in log and '(strict)' in log
    log = _tools(['tools/test.py', path, str(tmp_path / 'work' / 'epoch_1.pth'),
                  '--work-dir', str(tmp_path / 'test')])
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log


def _tiny_upernet(tmp_path, checkpoint):
    root = tiny_ade20k(str(tmp_path / 'ade'), splits=('training', 'validation'))
    cfg = shrink(Config.fromfile([p for p in SEG if 'small' in p and 'ade20k' in p][0]),
                 checkpoint)
    crop = (64, 64)
    cfg.model.data_preprocessor.size = crop
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.update(data_root=root, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomCrop', crop_size=crop), dict(type='PackSegInputs')])
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.update(data_root=root, pipeline=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=crop, keep_ratio=False),
        dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')])
    cfg.val_dataloader = cfg.test_dataloader
    cfg.train_cfg.update(max_iters=2, val_interval=100)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 2
    return _write(cfg, str(tmp_path / 'seg.py'))


def test_upernet_with_repre_backbone_trains_and_tests(tmp_path, repre_checkpoint):
    path = _tiny_upernet(tmp_path, repre_checkpoint[0])
    log = _tools(['tools/train.py', path, '--work-dir', str(tmp_path / 'work'), '--no-validate'])
    assert 'decode.loss_ce' in log and '(strict)' in log
    log = _tools(['tools/test.py', path, str(tmp_path / 'work' / 'iter_2.pth'),
                  '--work-dir', str(tmp_path / 'test')])
    assert 'mIoU' in log


def test_transfer_driver_exports_trains_and_tests(tmp_path, repre_checkpoint):
    """tools/benchmarks/transfer.sh end to end: export, torchrun training, torchrun test."""
    path = _tiny_upernet(tmp_path, '')
    work = str(tmp_path / 'transfer')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', PYTHON=sys.executable,
               CONFIG=path, WORK_DIR=work, PORT=str(29700 + os.getpid() % 200))
    out = subprocess.run(['bash', 'tools/benchmarks/transfer.sh', 'ade20k-upernet-vit-s',
                          repre_checkpoint[0], '1', '--no-validate'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'wrote' in log and 'dropped: decoder' in log  # the export step said what it did
    assert osp.exists(osp.join(work, 'backbone.pth')) and osp.exists(osp.join(work, 'iter_2.pth'))
    assert 'mIoU' in log


def test_pyramid_levels_give_roi_align_the_features_it_reads():
    """mmcv's RoIAlign reads a map's memory as contiguous NCHW. The pyramid's LayerNorm2d leaves
    channels-last views: before the fix every RoI feature of Mask R-CNN was read scrambled (the
    masks of tests/test_det_transfer.py::test_mask_rcnn_overfits_a_few_images did not learn).
    Each level is contiguous, and RoIAlign on it equals RoIAlign on a contiguous copy."""
    from mmcv.ops import roi_align

    import repre_mm  # noqa: F401  (registers the neck)
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32, out_channels=16))
    levels = neck((torch.randn(2, 32, 6, 8), ))
    rois = torch.tensor([[0, 2.0, 3.0, 40.0, 30.0], [1, 10.0, 1.0, 60.0, 44.0]])
    for level, stride in zip(levels, (4, 8, 16, 32, 64)):
        assert level.is_contiguous()
        read = roi_align(level, rois, (7, 7), 1.0 / stride, 0, 'avg', True)
        expected = roi_align(level.clone(memory_format=torch.contiguous_format), rois, (7, 7),
                             1.0 / stride, 0, 'avg', True)
        assert torch.equal(read, expected)
    # the failure this guards against, shown on mmcv's op itself: a channels-last view of the
    # same values is read wrongly
    view = levels[0].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert torch.equal(view, levels[0])
    wrong = roi_align(view, rois, (7, 7), 0.25, 0, 'avg', True)
    assert not torch.allclose(wrong, roi_align(levels[0], rois, (7, 7), 0.25, 0, 'avg', True))
