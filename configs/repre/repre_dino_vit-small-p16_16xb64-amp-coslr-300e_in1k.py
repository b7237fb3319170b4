# RePre on DINO, ViT-S/16, 300 epochs on ImageNet-1k. 16 GPUs x 64 = 1024, AMP.
# One diff from configs/baselines/dino_vit-small-p16_16xb64-amp-coslr-300e_in1k.py: the two global
# crops reconstruct themselves from blocks 2, 5, 8, 11 (the 10 local crops do not; set
# reconstruct_local_crops=True to include them).
_base_ = '../baselines/dino_vit-small-p16_16xb64-amp-coslr-300e_in1k.py'

model = dict(
    _delete_=True,
    type='RePre',
    framework={{_base_.model}},
    levels=(2, 5, 8, 11),
    reconstruct_local_crops=False,
    decoder=dict(type='MultiLevelFusionDecoder'),
    rec_head=dict(type='RePreReconstructionHead', criterion='L1', loss_weight=1.0))
