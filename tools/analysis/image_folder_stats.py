"""Image statistics of a folder, for a config's data_preprocessor (docs/custom_dataset.md).

    python tools/analysis/image_folder_stats.py data/my_images/train [--size 224] [--max 5000]

Prints the number of images, the median shorter side, colour or grey, and the RGB mean / std
(0-255, images resized to --size as training sees them) over at most --max random images.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from repre_mm.datasets.image_folder import IMAGE_EXTENSIONS, image_statistics  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder')
    parser.add_argument('--size', type=int, help='resize to size x size first (the crop size)')
    parser.add_argument('--max', type=int, default=5000, help='images sampled at most')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    import cv2
    import numpy as np
    paths = sorted(osp.join(d, f) for d, _, files in os.walk(args.folder) for f in files
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        sys.exit(f'{args.folder} holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
    rng = np.random.default_rng(args.seed)
    picked = [paths[i] for i in rng.permutation(len(paths))[:args.max]]
    sides = []
    for path in picked:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            sys.exit(f'cannot read image {path}: fix or remove it.')
        sides.append(min(image.shape[:2]))
    mean, std, colour = image_statistics(picked, args.size)
    stats = dict(images=len(paths), sampled=len(picked), median_short_side=int(np.median(sides)),
                 colour=colour, mean=mean, std=std)
    print(json.dumps(stats))
    print(f'data_preprocessor = dict(mean={mean}, std={std})')
    return stats


if __name__ == '__main__':
    main()
