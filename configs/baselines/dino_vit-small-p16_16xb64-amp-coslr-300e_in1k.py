# DINO, ViT-S/16, 300 epochs on ImageNet-1k (the official ViT-S/16 run). 16 GPUs x 64 = 1024.
_base_ = './dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py'

max_epochs = 300
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=10,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 10, eta_min=1e-6, by_epoch=True,
         begin=10, end=max_epochs, convert_to_iter_based=True),
    dict(type='CosineAnnealingParamScheduler', param_name='weight_decay', eta_min_ratio=10.,
         T_max=max_epochs, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
