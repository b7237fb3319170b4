# DINO, ViT-S/16 (DeiT-S, 6 heads), 100 epochs on ImageNet-1k, the official recipe: multi-crop
# 2x224 + 10x96, projector 2048-2048-256 -> 65536 (weight-normalised, frozen in epoch 0), student
# temperature 0.1, teacher temperature 0.04 -> 0.07 over 30 epochs, centre momentum 0.9, teacher
# EMA 0.996 -> 1 (cosine), AdamW lr 5e-4 x batch/256 with 10 warm-up epochs, weight decay
# 0.04 -> 0.4 (cosine), gradient clipping 3.0, drop path 0.1, AMP. 16 GPUs x 64 = 1024.
#   bash tools/dist_train.sh configs/baselines/dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py 8
_base_ = [
    '../_base_/datasets/imagenet_dino_multicrop.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)

max_epochs = 100
out_channels = 65536
model = dict(
    type='DINO',
    base_momentum=0.004,
    backbone=dict(type='VisionTransformer', arch='deit-small', img_size=224, patch_size=16,
                  drop_path_rate=0.1, out_type='cls_token'),
    neck=dict(type='DINOProjector', in_channels=384, out_channels=out_channels,
              hidden_channels=2048, bottleneck_channels=256, norm_last_layer=True),
    head=dict(type='DINODistillationHead', out_channels=out_channels, student_temp=0.1,
              center_momentum=0.9))

optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.04),
    clip_grad=dict(max_norm=3.0),
    # biases and norms are not regularised (the official code's two parameter groups)
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    # plain-dict param groups: mmengine's compile=True cannot trace its ConfigDict ones
    constructor='PlainParamGroupsOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 10, eta_min=1e-6, by_epoch=True,
         begin=10, end=max_epochs, convert_to_iter_based=True),
    # 0.04 -> 0.4; a ratio, so the groups without weight decay stay at 0
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', eta_min_ratio=10.,
         T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
custom_hooks = [
    dict(type='DINOTeacherTempHook', warmup_temp=0.04, temp=0.07, warmup_epochs=30,
         freeze_last_layer_epochs=1),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateCheckpointHook'),
]
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=10, max_keep_ckpts=3))
find_unused_parameters = True  # the last layer gets no gradient in epoch 0
auto_scale_lr = dict(base_batch_size=1024)
