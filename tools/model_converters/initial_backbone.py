"""Write a downstream config's backbone at its initial weights, in the layout of a pre-trained
export (``backbone.*``): the from-scratch reference of a transfer run.

    python tools/model_converters/initial_backbone.py CONFIG OUT [--seed N]

The backbone is built from CONFIG without a checkpoint, so its architecture initialises it as
it would before pre-training (mmpretrain's MoCoV3ViT: a fixed 2-D sin-cos ``pos_embed``, its own
patch-embedding and qkv initialisation), under ``--seed`` (default: the config's
``randomness.seed``, else 0). Loaded through the config's ``init_cfg`` (``Pretrained``, strict),
like the pre-trained export it stands for, it gives the very module and the very trainable
parameters of a pre-trained run; only the initial weights differ. Built with ``init_cfg=None``
instead, MoCoV3ViT would freeze ``pos_embed`` (``requires_grad=False``) for the whole fine-tuning
while the pre-trained runs fine-tune it.
"""
import argparse
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))


def initial_backbone(config: str, seed=None) -> tuple:
    """(the backbone's initial state dict with ``backbone.`` keys, the seed used)."""
    import repre_mm  # noqa: F401  (registers our classes; the config may not import it)
    from repre_mm.utils.logging import quiet_mmengine
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner import set_random_seed
    cfg = Config.fromfile(config)  # its custom_imports register what the backbone needs
    if seed is None:
        seed = (cfg.get('randomness') or {}).get('seed')
        seed = 0 if seed is None else seed
    quiet_mmengine()  # init_weights would log a paragraph per parameter
    backbone_cfg = cfg.model.backbone.copy()
    backbone_cfg.init_cfg = None
    set_random_seed(seed)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        backbone = MODELS.build(backbone_cfg)
    backbone.init_weights()
    return {f'backbone.{k}': v for k, v in backbone.state_dict().items()}, seed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='the downstream config (mmdet / mmseg)')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument('--seed', type=int,
                        help="default: the config's randomness.seed, else 0")
    args = parser.parse_args()
    state_dict, seed = initial_backbone(args.config, args.seed)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    tmp = args.out + '.tmp'
    torch.save(dict(state_dict=state_dict,
                    meta=dict(initial=True, seed=seed, config=osp.abspath(args.config))), tmp)
    os.replace(tmp, args.out)  # never a truncated file under the final name
    print(f'wrote the initial backbone of {args.config} (seed {seed}): {len(state_dict)} '
          f'tensors ({sum(v.numel() for v in state_dict.values()) / 1e6:.2f} M values) '
          f'-> {args.out}')


if __name__ == '__main__':
    main()
