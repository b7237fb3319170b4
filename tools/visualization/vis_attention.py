"""CLS-to-patch attention of the last block of a ViT checkpoint, one map per head (as DINO's
``visualize_attention.py``). Works for RePre and baseline pre-training configs with a ViT.

    python tools/visualization/vis_attention.py CONFIG CHECKPOINT img1.jpg ... \
        [--out work_dirs/vis_attention] [--encoder momentum] [--device cuda:0]

Written per image: ``<name>_attention.png``, the input and then each head's map (upsampled to
the image, one block per patch; viridis, each head scaled to its own min-max). ``--encoder
momentum`` shows the momentum / teacher encoder (DINO's tool shows the teacher).
"""
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import mmcv  # noqa: E402

from repre_mm.utils.logging import quiet_mmengine  # noqa: E402
from repre_mm.visualization import (attention_grid, model_and_size,  # noqa: E402
                                    normalise, read_image, visualiser_parser)


def parse_args(argv=None):
    parser = visualiser_parser('Last-block CLS attention of a ViT checkpoint',
                               'the pre-training config of the checkpoint',
                               'work_dirs/vis_attention')
    parser.add_argument('--encoder', choices=['online', 'momentum'], default='online',
                        help='the online encoder or its momentum / teacher copy')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the paths written."""
    args = parse_args(argv)
    quiet_mmengine()
    model, size = model_and_size(args)
    os.makedirs(args.out, exist_ok=True)
    written = []
    for path in args.images:
        images = normalise(model, [read_image(path, size)])
        grid = attention_grid(model, images, args.encoder, args.scale)
        out = osp.join(args.out, osp.splitext(osp.basename(path))[0] + '_attention.png')
        mmcv.imwrite(grid[..., ::-1], out)  # RGB -> BGR for the file
        print(f'wrote {out}')
        written.append(out)
    return written


if __name__ == '__main__':
    main()
