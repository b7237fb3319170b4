# RePre on BYOL with MoCo v3's ViT-S/16, 200 epochs on ImageNet-1k. 16 GPUs x 256 = 4096, AMP.
# One diff from configs/baselines/byol_vit-small-p16_16xb256-amp-coslr-200e_in1k.py.
_base_ = '../baselines/byol_vit-small-p16_16xb256-amp-coslr-200e_in1k.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(2, 5, 8, 11),
    decoder=dict(type='MultiLevelFusionDecoder'),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
