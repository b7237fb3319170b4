# Fashion-MNIST with DINO-style multi-crop, scaled to 28x28 images: 2 global crops of 28
# (scale 0.4-1) and 4 local crops of 12 (scale 0.1-0.4). No blur or solarisation at this size.
_base_ = './fashion_mnist_mocov3.py'

global_view = [
    dict(type='RandomResizedCrop', scale=28, crop_ratio_range=(0.4, 1.), backend='pillow'),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)], prob=0.8),
    dict(type='RandomFlip', prob=0.5),
]
local_view = [
    dict(type='RandomResizedCrop', scale=12, crop_ratio_range=(0.1, 0.4), backend='pillow'),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)], prob=0.8),
    dict(type='RandomFlip', prob=0.5),
]
train_pipeline = [
    dict(type='LoadImageOrSkip'),
    dict(type='MultiView', num_views=[2, 4], transforms=[global_view, local_view]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
