# MoCo v3, ViT-B/16, 300 epochs on ImageNet-1k: the baseline RePre is compared with.
# mmpretrain's recipe unchanged: 16 GPUs x 256 = batch 4096, AdamW lr 2.4e-3, wd 0.1, AMP.
_base_ = 'mmpretrain::mocov3/mocov3_vit-base-p16_16xb256-amp-coslr-300e_in1k.py'
custom_imports = dict(imports=['repre_mm'], allow_failed_imports=False)
# checkpoints and last_checkpoint written atomically; old ones removed after the new one is written
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
# A NaN / inf loss stops the run before the bad update, naming the term and the iteration;
# checkpoints carry the random generators, so that a resumed run continues exactly.
custom_hooks = [dict(type='NonFiniteLossHook'), dict(type='RandomStateCheckpointHook')]
