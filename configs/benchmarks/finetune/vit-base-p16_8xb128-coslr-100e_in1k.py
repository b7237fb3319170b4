# Fine-tune a pre-trained ViT-B/16 (RePre or baseline) on ImageNet-1k for 100 epochs: mmpretrain's
# MAE fine-tuning recipe (AdamW lr 2e-3 at batch 1024, layer-wise lr decay 0.65, RandAugment,
# random erasing, mixup 0.8 / cutmix 1.0, label smoothing 0.1, drop path 0.1), classifying the
# CLS token after the final norm as MoCo v3 does. 8 GPUs x 128 = 1024.
#   bash tools/dist_train.sh configs/benchmarks/finetune/vit-base-p16_8xb128-coslr-100e_in1k.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/repre_vit-b/epoch_300.pth
_base_ = 'mmpretrain::mae/benchmarks/vit-base-p16_8xb128-coslr-100e_in1k.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(
        out_type='cls_token',
        final_norm=True,
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)))
