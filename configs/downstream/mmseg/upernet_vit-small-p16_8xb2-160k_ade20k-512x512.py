# UperNet on ADE20K (512x512, 160k iterations) with a pre-trained ViT-S/16 (RePre or baseline):
# mmseg's ViT-UperNet recipe (blocks 2, 5, 8, 11 through a multi-level neck, FCN auxiliary head),
# AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.65, 1500 warm-up iterations then poly.
# 8 GPUs x 2 = 16. The backbone must load completely:
#   bash tools/dist_train.sh configs/downstream/mmseg/upernet_vit-small-p16_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/repre_vit-s/epoch_300.pth
_base_ = [
    './_base_/upernet_vit-small-p16.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))
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
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
