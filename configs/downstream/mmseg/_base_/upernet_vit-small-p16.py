# UperNet + pre-trained ViT-S/16 (mmpretrain's ViT inside mmseg: the pre-training key layout,
# loaded with strict=True; mmseg's own ViT renames keys and loads non-strictly).
_base_ = 'mmseg::_base_/models/upernet_vit-b16_ln_mln.py'
custom_imports = dict(imports=['repre_mm', 'mmpretrain.models'], allow_failed_imports=False)

embed_dims = 384
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.MoCoV3ViT',
        arch='mocov3-small',
        img_size=512,
        patch_size=16,
        out_type='featmap',
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='', prefix='backbone.', strict=True)),
    neck=dict(in_channels=[embed_dims] * 4, out_channels=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims))
find_unused_parameters = True  # the CLS token's output is not used by the decoder
