# RePre on the small-scale DINO baseline (Fashion-MNIST, tiny ViT): one diff from
# configs/baselines/dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py. The global crops
# reconstruct themselves. 1 process x 128, CPU (fp32).
_base_ = '../baselines/dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(1, 3, 5),
    decoder=dict(type='MultiLevelFusionDecoder', base_width=64),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
