# UperNet on Cityscapes (512x1024 crops, 80k iterations) with a pre-trained ViT-S/16: the ADE20K
# recipe of this folder (optimiser, layer decay, warm-up + poly) on mmseg's Cityscapes data,
# 19 classes. 8 GPUs x 2 = 16.
_base_ = [
    './_base_/upernet_vit-small-p16.py',
    'mmseg::_base_/datasets/cityscapes.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
crop_size = (512, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=19),
    auxiliary_head=dict(num_classes=19))
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
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=80000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
