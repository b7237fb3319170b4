# DINO on Fashion-MNIST with the small-scale tiny ViT (d128, 6 blocks, 4 heads, patch 4): the
# DINO baseline of tools/benchmarks/small_scale.py --framework dino. 1 process x 128, CPU (fp32).
_base_ = [
    '../_base_/datasets/fashion_mnist_dino.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)

embed_dims = 128
out_channels = 1024
model = dict(
    type='DINO',
    base_momentum=0.004,
    backbone=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=embed_dims, num_layers=6, num_heads=4, feedforward_channels=512),
        img_size=28,
        patch_size=4,
        out_type='cls_token'),
    neck=dict(type='DINOProjector', in_channels=embed_dims, out_channels=out_channels,
              hidden_channels=512, bottleneck_channels=64),
    head=dict(type='DINODistillationHead', out_channels=out_channels, student_temp=0.1,
              center_momentum=0.9))

max_epochs = 20
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.04),
    clip_grad=dict(max_norm=3.0),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    # plain-dict param groups: mmengine's compile=True cannot trace its ConfigDict ones
    constructor='PlainParamGroupsOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2,
         end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', eta_min_ratio=10.,
         T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2))
custom_hooks = [
    dict(type='DINOTeacherTempHook', warmup_temp=0.04, temp=0.07, warmup_epochs=2,
         freeze_last_layer_epochs=1),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateCheckpointHook'),
    dict(type='KNNEvaluationHook', interval=5,
         bank_dataloader={{_base_.knn_bank_dataloader}},
         query_dataloader={{_base_.knn_query_dataloader}}),
]
find_unused_parameters = True
auto_scale_lr = dict(base_batch_size=128)
randomness = dict(seed=0)
