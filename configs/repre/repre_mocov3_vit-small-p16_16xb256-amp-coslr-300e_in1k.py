# RePre on MoCo v3, ViT-S/16, 300 epochs on ImageNet-1k. 16 GPUs x 256 = batch 4096, AMP.
# One diff from configs/baselines/mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py: the
# framework is wrapped by RePre, which reconstructs each view from blocks 2, 5, 8, 11 (L1, x1).
#   tools/dist_train.sh configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py 8
_base_ = '../baselines/mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(2, 5, 8, 11),
    decoder=dict(type='MultiLevelFusionDecoder', base_width=128, upsample='pixel_shuffle'),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
