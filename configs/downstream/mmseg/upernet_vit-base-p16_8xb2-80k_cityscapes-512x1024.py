# UperNet on Cityscapes (512x1024, 80k) with a pre-trained ViT-B/16. 8 GPUs x 2 = 16.
_base_ = './upernet_vit-small-p16_8xb2-80k_cityscapes-512x1024.py'

embed_dims = 768
model = dict(
    backbone=dict(type='mmpretrain.VisionTransformer', arch='base'),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
