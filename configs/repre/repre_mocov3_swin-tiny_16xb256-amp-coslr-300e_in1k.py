# RePre on MoCo v3 with a Swin-T backbone, 300 epochs on ImageNet-1k. 16 GPUs x 256 = 4096, AMP.
# One diff from configs/baselines/mocov3_swin-tiny_16xb256-amp-coslr-300e_in1k.py: the four Swin
# stages (strides 4, 8, 16, 32) are the levels, each joining the decoder at its own resolution.
_base_ = '../baselines/mocov3_swin-tiny_16xb256-amp-coslr-300e_in1k.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(0, 1, 2, 3),
    decoder=dict(type='MultiLevelFusionDecoder'),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
