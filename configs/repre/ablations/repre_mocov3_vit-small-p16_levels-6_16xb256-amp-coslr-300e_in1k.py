# Ablation of configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py: 6 levels, blocks 1, 3, 5, 7, 9, 11.
# 16 GPUs x 256 = batch 4096, AMP, 300 epochs (shorten with --cfg-options for a sweep).
_base_ = '../repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'
model = dict(levels=(1, 3, 5, 7, 9, 11))
