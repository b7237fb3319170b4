# BYOL with MoCo v3's ViT-S/16 (12 heads), 200 epochs on ImageNet-1k: mmpretrain's BYOL recipe
# (views, projector, predictor, momentum target) with the backbone swapped and MoCo v3's ViT
# optimiser (AdamW 2.4e-3 at batch 4096, wd 0.1, AMP). 16 GPUs x 256 = 4096.
_base_ = 'mmpretrain::byol/byol_resnet50_16xb256-coslr-200e_in1k.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(_delete_=True, type='MoCoV3ViT', arch='mocov3-small', img_size=224,
                  patch_size=16, stop_grad_conv1=True),
    neck=dict(in_channels=384, with_avg_pool=False))
optim_wrapper = dict(
    _delete_=True, type='AmpOptimWrapper', loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=2.4e-3, weight_decay=0.1))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=180, by_epoch=True, begin=20, end=200,
         convert_to_iter_based=True),
]
find_unused_parameters = True
auto_scale_lr = dict(base_batch_size=4096)
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='RandomStateCheckpointHook')]
