# UperNet on ADE20K (512x512, 160k) with a pre-trained ViT-B/16 (RePre or baseline). 8 GPUs x 2.
_base_ = './upernet_vit-small-p16_8xb2-160k_ade20k-512x512.py'

embed_dims = 768
model = dict(
    backbone=dict(type='mmpretrain.VisionTransformer', arch='base'),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
