"""What a RePre checkpoint's decoder reconstructs from its encoder's levels, in colour.

    python tools/visualization/vis_reconstruction.py CONFIG CHECKPOINT img1.jpg img2.png ... \
        [--out work_dirs/vis_reconstruction] [--one-grid] [--device cuda:0]

Each image (colour or grey, any size) is resized and centre-cropped to the encoder's input size,
normalised by the model's data preprocessor, encoded once with the level tap and decoded, as in
training. Written per image: ``<name>_reconstruction.png`` with input | reconstruction | |error|;
with ``--one-grid`` one ``reconstructions.png`` (rows: inputs, reconstructions, errors).
"""
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import mmcv  # noqa: E402
import torch  # noqa: E402

from repre_mm.utils.logging import quiet_mmengine  # noqa: E402
from repre_mm.visualization import (model_and_size, normalise, read_image,  # noqa: E402
                                    reconstruction_grid, require_repre, visualiser_parser)


def parse_args(argv=None):
    parser = visualiser_parser('Reconstructions of a RePre checkpoint',
                               'the RePre pre-training config of the checkpoint',
                               'work_dirs/vis_reconstruction')
    parser.add_argument('--one-grid', action='store_true',
                        help='one reconstructions.png for all images instead of one per image')
    return parser.parse_args(argv)


def main(argv=None):
    """Returns the paths written."""
    args = parse_args(argv)
    quiet_mmengine()
    model, size = model_and_size(args)
    try:
        require_repre(model, 'vis_reconstruction')
    except TypeError as e:
        raise SystemExit(f'{args.config}: {e}')
    images = normalise(model, [read_image(path, size) for path in args.images])
    model.tap.check_input(images)  # a clear error for an --img-size off the patch grid
    os.makedirs(args.out, exist_ok=True)
    written = []
    with torch.no_grad():
        if args.one_grid:
            written.append(osp.join(args.out, 'reconstructions.png'))
            grids = [reconstruction_grid(model, images, args.scale)]
        else:
            stems = [osp.splitext(osp.basename(p))[0] for p in args.images]
            written = [osp.join(args.out, f'{s}_reconstruction.png') for s in stems]
            grids = [reconstruction_grid(model, images[i:i + 1], args.scale, images_as_rows=True)
                     for i in range(len(images))]
    for path, grid in zip(written, grids):
        mmcv.imwrite(grid[..., ::-1], path)  # RGB -> BGR for the file
        print(f'wrote {path}')
    return written


if __name__ == '__main__':
    main()
