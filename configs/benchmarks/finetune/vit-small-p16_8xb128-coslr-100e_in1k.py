# Fine-tune a pre-trained ViT-S/16 (MoCo v3's 12-head ViT-S) on ImageNet-1k for 100 epochs: the
# ViT-B recipe of this folder with layer-wise lr decay 0.75. 8 GPUs x 128 = 1024.
_base_ = './vit-base-p16_8xb128-coslr-100e_in1k.py'

model = dict(
    backbone=dict(type='MoCoV3ViT', arch='mocov3-small'),
    head=dict(in_channels=384))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.75))
