"""One set of tools: tools/train.py runs mmdet and mmseg configs too (real compiled mmcv ops).

Tiny datasets in the real formats are generated here: a COCO json with boxes and polygons read
by mmdet's CocoDataset, ADE20K-style image / label PNGs read by mmseg's ADE20KDataset.
"""
import os
import os.path as osp
import subprocess
import sys

from helpers import tiny_ade20k, tiny_coco

ROOT = osp.dirname(osp.dirname(__file__))


def _run(cfg_path, work_dir):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='2', PYTHON=sys.executable)
    return subprocess.run([sys.executable, 'tools/train.py', cfg_path, '--work-dir', work_dir,
                           '--no-validate'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_train_tool_runs_an_mmdet_mask_rcnn_config(tmp_path):
    root = tiny_coco(str(tmp_path / 'coco'))
    cfg = str(tmp_path / 'mask_rcnn.py')
    with open(cfg, 'w') as f:
        f.write(f"""_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
model = dict(backbone=dict(init_cfg=None))  # no download: a random ResNet-50
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r}, ann_file='ann.json', data_prefix=dict(img='img/'),
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                           dict(type='Resize', scale=(256, 256), keep_ratio=True),
                           dict(type='PackDetInputs')]))
train_cfg = dict(max_epochs=1)
default_hooks = dict(logger=dict(interval=1))
""")
    out = _run(cfg, str(tmp_path / 'work'))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'loss_mask' in log and 'loss_rpn_cls' in log  # RoIAlign / NMS from mmcv's ops ran
    assert osp.exists(osp.join(tmp_path, 'work', 'epoch_1.pth'))


def test_train_tool_runs_an_mmseg_upernet_config(tmp_path):
    root = tiny_ade20k(str(tmp_path / 'ade'))
    cfg = str(tmp_path / 'upernet.py')
    with open(cfg, 'w') as f:
        f.write(f"""_base_ = 'mmseg::upernet/upernet_r18_4xb4-80k_ade20k-512x512.py'
crop_size = (64, 64)
model = dict(pretrained=None, data_preprocessor=dict(size=crop_size))
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root={root!r},
                 pipeline=[dict(type='LoadImageFromFile'),
                           dict(type='LoadAnnotations', reduce_zero_label=True),
                           dict(type='RandomCrop', crop_size=crop_size),
                           dict(type='PackSegInputs')]))
train_cfg = dict(max_iters=2, val_interval=100)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")
    out = _run(cfg, str(tmp_path / 'work'))
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'decode.loss_ce' in log and 'aux.loss_ce' in log
    assert osp.exists(osp.join(tmp_path, 'work', 'iter_2.pth'))
