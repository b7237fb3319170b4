# MoCo v3 on Fashion-MNIST with a tiny ViT (d128, 6 blocks, 4 heads, patch 4 on 28x28): the
# small-scale baseline of the README's main job. 1 process x 128, CPU-friendly (fp32).
#   python tools/train.py configs/baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py
_base_ = [
    '../_base_/datasets/fashion_mnist_mocov3.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)

embed_dims = 128
temperature = 0.2
mlp = dict(type='NonLinearNeck', hid_channels=512, out_channels=128, with_bias=False,
           with_last_bn=True, with_last_bn_affine=False, with_last_bias=False,
           with_avg_pool=False)
model = dict(
    type='MoCoV3',
    base_momentum=0.01,
    backbone=dict(
        type='MoCoV3ViT',
        arch=dict(embed_dims=embed_dims, num_layers=6, num_heads=4, feedforward_channels=512),
        img_size=28,
        patch_size=4,
        stop_grad_conv1=True),
    neck=dict(**mlp, in_channels=embed_dims, num_layers=3),
    head=dict(
        type='MoCoV3Head',
        predictor=dict(**mlp, in_channels=128, num_layers=2),
        loss=dict(type='CrossEntropyLoss', loss_weight=2 * temperature),
        temperature=temperature))

max_epochs = 20
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 2, by_epoch=True, begin=2,
         end=max_epochs, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=2))
custom_hooks = [
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateCheckpointHook'),
    dict(type='KNNEvaluationHook', interval=5,
         bank_dataloader={{_base_.knn_bank_dataloader}},
         query_dataloader={{_base_.knn_query_dataloader}}),
]
# as in mmpretrain's MoCo v3 recipes: some parameters get no gradient in a step
find_unused_parameters = True
auto_scale_lr = dict(base_batch_size=128)
randomness = dict(seed=0)
