# Ablation of configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py: reconstruction loss weight 2.
# 16 GPUs x 256 = batch 4096, AMP, 300 epochs (shorten with --cfg-options for a sweep).
_base_ = '../repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'
model = dict(rec_head=dict(loss_weight=2.0))
