# ImageNet-1k with DINO's multi-crop views: 2 global 224 crops (scale 0.4-1) and 10 local 96
# crops (scale 0.05-0.4), the official augmentations, through mmpretrain's transforms.
dataset_type = 'ImageNet'
data_root = 'data/imagenet/'
data_preprocessor = dict(
    type='SelfSupDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)

color = [
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2,
                          hue=0.1)],
         prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
]
global_crop = dict(type='RandomResizedCrop', scale=224, crop_ratio_range=(0.4, 1.),
                   interpolation='bicubic', backend='pillow')
local_crop = dict(type='RandomResizedCrop', scale=96, crop_ratio_range=(0.05, 0.4),
                  interpolation='bicubic', backend='pillow')

global_view1 = [global_crop, *color,
                dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
                     prob=1.0)]
global_view2 = [global_crop, *color,
                dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
                     prob=0.1),
                dict(type='Solarize', thr=128, prob=0.2)]
local_view = [local_crop, *color,
              dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
                   prob=0.5)]
train_pipeline = [
    dict(type='LoadImageOrSkip'),  # names an unreadable file; skip_unreadable=True skips it
    dict(type='MultiView', num_views=[1, 1, 10],
         transforms=[global_view1, global_view2, local_view]),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=64,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    drop_last=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train',
                 pipeline=train_pipeline))
