# Fashion-MNIST (28x28 grayscale product photos, 10 classes) in CustomDataset's folder layout:
#   python tools/dataset_converters/prepare_fashion_mnist.py --out data/fashion_mnist
# Two MoCo-v3-style views per image, scaled down to 28x28 (no blur: it erases 28-pixel images).
data_root = 'data/fashion_mnist/'
img_size = 28
data_preprocessor = dict(
    type='SelfSupDataPreprocessor',
    mean=[72.94, 72.94, 72.94],
    std=[90.02, 90.02, 90.02],
    to_rgb=True)

view_pipeline = [
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.3, 1.),
         backend='pillow'),
    dict(type='RandomApply',
         transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4)], prob=0.8),
    dict(type='RandomFlip', prob=0.5),
]
train_pipeline = [
    dict(type='LoadImageOrSkip'),  # names an unreadable file; skip_unreadable=True skips it
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs'),
]
eval_pipeline = [dict(type='LoadImageOrSkip'), dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=128,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    drop_last=True,
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 with_label=False, pipeline=train_pipeline))

# k-NN evaluation of the frozen encoder: train split as the bank, test split as queries.
knn_bank_dataloader = dict(
    batch_size=256, num_workers=2, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 pipeline=eval_pipeline))
knn_query_dataloader = dict(
    batch_size=256, num_workers=2, sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='test',
                 pipeline=eval_pipeline))
