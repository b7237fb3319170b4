# RePre + MoCo v3 (ViT-S/16) on YOUR images: a template to copy and edit (docs/custom_dataset.md).
#   data/my_images/train/<class or any folder>/*.jpg   (pre-training needs no labels)
#   data/my_images/val/<class>/*.jpg                   (optional: k-NN accuracy while training,
#                                                        with train/ in the same class folders)
# Measure the image statistics once and paste them below:
#   python tools/analysis/image_folder_stats.py data/my_images/train
#   python tools/train.py configs/custom/repre_mocov3_vit-small-p16_1xb64-coslr-100e_image-folder.py
_base_ = '../repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'

data_root = 'data/my_images/'
img_size = 224          # crops are img_size x img_size; a multiple of the patch (16)
mean = [123.675, 116.28, 103.53]  # RGB, 0-255: replace by image_folder_stats.py's numbers
std = [58.395, 57.12, 57.375]
batch_size = 64         # per GPU; the lr below scales with the total batch (auto_scale_lr)
max_epochs = 100
warmup_epochs = 10
knn_splits = ('train', 'val')  # k-NN (bank, queries), both in class folders; None: no k-NN

data_preprocessor = dict(mean=mean, std=std)
model = dict(framework=dict(backbone=dict(img_size=img_size)))


def view(blur_prob, solarize_prob):
    return [
        dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.2, 1.),
             backend='pillow'),
        dict(type='RandomApply', prob=0.8, transforms=[
            dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)]),
        dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
             channel_weights=(0.114, 0.587, 0.2989)),
        dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf',
             prob=blur_prob),
        dict(type='Solarize', thr=128, prob=solarize_prob),
        dict(type='RandomFlip', prob=0.5),
    ]


train_pipeline = [
    dict(type='LoadImageOrSkip', skip_unreadable=True),  # a broken file is logged and skipped
    dict(type='MultiView', num_views=[1, 1], transforms=[view(1.0, 0.0), view(0.1, 0.2)]),
    dict(type='PackInputs'),
]
del view  # a config keeps data, not functions
train_dataloader = dict(
    batch_size=batch_size, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True), collate_fn=dict(type='default_collate'),
    drop_last=True,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root, data_prefix='train',
                 with_label=False, pipeline=train_pipeline))

# AdamW as the recipe (lr 2.4e-3 at batch 4096), scaled to the batch actually used.
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic',
                     optimizer=dict(type='AdamW', lr=2.4e-3, betas=(0.9, 0.95), weight_decay=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warmup_epochs, by_epoch=True,
         begin=warmup_epochs, end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
auto_scale_lr = dict(base_batch_size=4096)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3))

eval_pipeline = [
    dict(type='LoadImageOrSkip'),
    dict(type='ResizeEdge', scale=img_size * 8 // 7, edge='short', backend='pillow'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
knn_loader = dict(batch_size=batch_size, num_workers=4,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
custom_hooks = [
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateCheckpointHook'),
] + ([] if knn_splits is None else [
    dict(type='KNNEvaluationHook', interval=10,
         bank_dataloader=dict(**knn_loader, dataset=dict(
             type='CustomDataset', data_root=data_root, data_prefix=knn_splits[0],
             pipeline=eval_pipeline)),
         query_dataloader=dict(**knn_loader, dataset=dict(
             type='CustomDataset', data_root=data_root, data_prefix=knn_splits[1],
             pipeline=eval_pipeline))),
])
