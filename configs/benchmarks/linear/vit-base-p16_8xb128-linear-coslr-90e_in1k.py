# Linear probe of a pre-trained ViT-B/16 (RePre or baseline) on ImageNet-1k: frozen backbone, CLS
# token, non-affine BatchNorm + linear classifier, SGD, 90 epochs (mmpretrain's MoCo v3 recipe).
# 8 GPUs x 128 = 1024.
_base_ = 'mmpretrain::mocov3/benchmarks/vit-base-p16_8xb128-linear-coslr-90e_in1k.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)),
    neck=dict(type='ClsBatchNormNeck', input_features=768))
