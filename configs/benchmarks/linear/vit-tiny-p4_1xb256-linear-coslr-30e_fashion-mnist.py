# Linear probe of the small-scale tiny ViT (configs/*/..._fashion-mnist.py) on Fashion-MNIST:
# frozen backbone, CLS token, non-affine BN + linear classifier, SGD, 30 epochs. 1 process, CPU.
#   python tools/train.py configs/benchmarks/linear/vit-tiny-p4_1xb256-linear-coslr-30e_fashion-mnist.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/small_scale/repre_seed0/epoch_3.pth
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)

data_root = 'data/fashion_mnist/'
data_preprocessor = dict(
    num_classes=10, mean=[72.94, 72.94, 72.94], std=[90.02, 90.02, 90.02], to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=256, num_workers=2, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=256, num_workers=2, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='test',
                 pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MoCoV3ViT',
        arch=dict(embed_dims=128, num_layers=6, num_heads=4, feedforward_channels=512),
        img_size=28,
        patch_size=4,
        frozen_stages=6,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)),
    neck=dict(type='ClsBatchNormNeck', input_features=128),
    head=dict(
        type='VisionTransformerClsHead',
        num_classes=10,
        in_channels=128,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
        init_cfg=dict(type='Normal', std=0.01, layer='Linear')))

optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.5, momentum=0.9, weight_decay=0.))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=30, by_epoch=True, begin=0, end=30)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=30, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=1))
