# Linear probe of a pre-trained ViT-S/16 (RePre or baseline) on ImageNet-1k: frozen backbone, CLS
# token, a non-affine BatchNorm then a linear classifier, SGD lr 12, 90 epochs (mmpretrain's MoCo v3
# recipe, with the BN that MoCo v3 and MAE put before the classifier). 8 GPUs x 128 = 1024.
#   bash tools/dist_train.sh configs/benchmarks/linear/vit-small-p16_8xb128-linear-coslr-90e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/repre_vit-s/epoch_300.pth
_base_ = 'mmpretrain::mocov3/benchmarks/vit-small-p16_8xb128-linear-coslr-90e_in1k.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    # strict=True: a checkpoint whose backbone keys do not match is an error, not a warning.
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)),
    neck=dict(type='ClsBatchNormNeck', input_features=384))
