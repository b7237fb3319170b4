# Mask R-CNN + ViT-B/16 + simple feature pyramid on COCO, 3x multi-scale. 8 GPUs x 2 = 16.
_base_ = './mask-rcnn_vit-small-p16-sfp_8xb2-ms-3x_coco.py'

model = dict(
    backbone=dict(type='mmpretrain.VisionTransformer', arch='base'),
    neck=dict(in_channels=768))
