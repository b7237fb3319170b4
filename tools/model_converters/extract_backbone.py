"""Write the encoder of a pre-training checkpoint alone (mmpretrain backbone format).

    python tools/model_converters/extract_backbone.py work_dirs/repre/epoch_300.pth backbone.pth

Keeps ``backbone.*`` (the online encoder), strips the prefix, and drops everything else (the
RePre decoder, neck, heads, the momentum encoder), saying what it dropped. The result loads into
``mmpretrain.VisionTransformer`` / ``MoCoV3ViT`` with zero missing keys, e.g. through
``init_cfg=dict(type='Pretrained', checkpoint='backbone.pth')``.
"""
import argparse
import os
import os.path as osp
import sys
from collections import Counter

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from repre_mm.utils.checkpoint import load_weights  # noqa: E402


def extract_backbone(state_dict, prefix='backbone.'):
    """Returns (backbone state dict without the prefix, {dropped top-level name: key count})."""
    backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not backbone:
        raise KeyError(f'no key starts with {prefix!r}: is this a pre-training checkpoint? '
                       f'Its top-level names: {sorted({k.split(".")[0] for k in state_dict})}')
    dropped = Counter(k.split('.')[0] for k in state_dict if not k.startswith(prefix))
    return backbone, dict(dropped)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='pre-training checkpoint')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.')
    args = parser.parse_args()
    backbone, dropped = extract_backbone(load_weights(args.src), args.prefix)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    tmp = args.dst + '.tmp'
    torch.save(dict(state_dict=backbone, meta=dict(source=osp.abspath(args.src))), tmp)
    os.replace(tmp, args.dst)  # never a truncated file under the final name
    print(f'kept {len(backbone)} backbone tensors '
          f'({sum(v.numel() for v in backbone.values()) / 1e6:.2f} M values) -> {args.dst}')
    print('dropped: ' + (', '.join(f'{name} ({n} tensors)' for name, n in sorted(
        dropped.items())) or 'nothing'))


if __name__ == '__main__':
    main()
