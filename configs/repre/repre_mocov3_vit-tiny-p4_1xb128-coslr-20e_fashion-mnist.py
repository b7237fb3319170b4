# RePre on the small-scale MoCo v3 baseline (Fashion-MNIST, tiny ViT with 6 blocks, patch 4):
# one diff from configs/baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py.
# 1 process x 128, CPU-friendly (fp32).
_base_ = '../baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(1, 3, 5),
    decoder=dict(type='MultiLevelFusionDecoder', base_width=64),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
