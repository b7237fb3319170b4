# Mask R-CNN on COCO with a pre-trained ViT-S/16 (RePre or baseline) and ViTDet's simple feature
# pyramid, 1x schedule (12 epochs), mmdet's data pipeline (1333x800). Plain global attention;
# the position embedding is interpolated to each input size. AdamW lr 1e-4 (wd 0.1).
# 8 GPUs x 2 = 16. The backbone must load completely (strict=True):
#   bash tools/dist_train.sh configs/downstream/mmdet/mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/repre_vit-s/epoch_300.pth
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['repre_mm', 'mmpretrain.models'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.MoCoV3ViT',
        arch='mocov3-small',
        img_size=224,
        patch_size=16,
        out_type='featmap',
        out_indices=(11, ),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=384, out_channels=256,
              num_outs=5))
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'pos_embed': dict(decay_mult=0.),
                                    'cls_token': dict(decay_mult=0.)}))
find_unused_parameters = True  # the CLS token's output is not used by the pyramid
