# MoCo v3 with a Swin-T backbone, 300 epochs on ImageNet-1k: the ViT-S/16 MoCo v3 recipe with the
# backbone swapped (last stage, average-pooled, into the projector). 16 GPUs x 256 = 4096, AMP.
_base_ = './mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'

model = dict(
    backbone=dict(_delete_=True, type='SwinTransformer', arch='tiny', img_size=224,
                  out_indices=(3, )),
    neck=dict(in_channels=768, with_avg_pool=True))
