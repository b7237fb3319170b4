"""Dense linear probe of any RePre or baseline checkpoint: how well do the frozen patch tokens
say which object lies under each pixel? (repre_mm/evaluation/dense_probe.py)

    python tools/benchmarks/dense_probe.py CONFIG CHECKPOINT                 # Fashion-MNIST mosaics
    python tools/benchmarks/dense_probe.py CONFIG CHECKPOINT --data PATH     # ImageFolder mosaics
    python tools/benchmarks/dense_probe.py CONFIG CHECKPOINT --blocks 3 final --out probe.json

CHECKPOINT: a pre-training checkpoint of CONFIG (all keys must match), or a bare backbone
(tools/model_converters/extract_backbone.py). Items are resized to the backbone's img_size and
normalised with CONFIG's data_preprocessor; mosaics are 2x2 cells, generated from --seed.
"""
import argparse
import json
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

from repre_mm.apis import init_model  # noqa: E402
from repre_mm.datasets import load_fashion_mnist, load_image_folder  # noqa: E402
from repre_mm.evaluation import DenseProbe  # noqa: E402
from repre_mm.evaluation.dense_probe import FINAL, check_block  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', help="a checkpoint, or 'none' for the untrained encoder")
    parser.add_argument('--data', help='ImageFolder PATH/{train,test}/<class>/* '
                        '(default: Fashion-MNIST, items on black: labels from the item mask)')
    parser.add_argument('--source', default='/usr/share/datasets/fashion-mnist')
    parser.add_argument('--labels-from', choices=['mask', 'box'],
                        help="pixel labels: 'mask' (bright item pixels) or 'box' (the item's "
                        "square); default mask for Fashion-MNIST, box for --data")
    parser.add_argument('--blocks', nargs='+', default=[FINAL],
                        help="blocks to probe: zero-based indices and/or 'final'")
    parser.add_argument('--items', type=int, nargs=2, default=(4000, 2000),
                        metavar=('TRAIN', 'TEST'), help='items read per split (at most)')
    parser.add_argument('--mosaics', type=int, nargs=2, default=(400, 200),
                        metavar=('TRAIN', 'TEST'))
    parser.add_argument('--seed', type=int, default=0, help='mosaic generation seed')
    parser.add_argument('--pixels', action='store_true', help='also score raw pixels')
    parser.add_argument('--out', help='write the scores as JSON here')
    return parser.parse_args(argv)


def items(args, size):
    """((train images, labels), (test images, labels), number of classes) as RGB at size."""
    if args.data:
        per_split = []
        for split, n in zip(('train', 'test'), args.items):
            images, labels, classes = load_image_folder(osp.join(args.data, split), size)
            keep = np.random.default_rng(0).permutation(len(images))[:n]
            per_split.append((images[keep], labels[keep]))
        return per_split[0], per_split[1], len(classes)
    import cv2
    data, source = load_fashion_mnist(args.source)
    print(f'[data] {source}')
    per_split = []
    for split, n in zip(('train', 'test'), args.items):
        images, labels = data[split][0][:n], data[split][1][:n]
        if images.shape[1] != size:
            images = np.stack([cv2.resize(i, (size, size), interpolation=cv2.INTER_AREA)
                               for i in images])
        per_split.append((np.repeat(images[..., None], 3, axis=3), labels))
    return per_split[0], per_split[1], 10


def main(argv=None):
    args = parse_args(argv)
    quiet_mmengine()  # init_weights would print a paragraph per parameter
    init_default_scope('mmpretrain')
    torch.set_grad_enabled(False)
    model = init_model(args.config, None if args.checkpoint == 'none' else args.checkpoint)
    backbone = model.backbone
    blocks = [b if b == FINAL else int(b) for b in args.blocks]
    for block in blocks:
        check_block(backbone, block)
    size = backbone.patch_resolution[0] * backbone.patch_embed.projection.stride[0]
    patch = backbone.patch_embed.projection.stride[0]
    train, test, num_classes = items(args, size)
    labels_from = args.labels_from or ('box' if args.data else 'mask')
    preprocessor = model.data_preprocessor
    probe = DenseProbe(train, test, num_classes, patch, preprocessor.mean.flatten().tolist(),
                       preprocessor.std.flatten().tolist(), labels_from=labels_from,
                       num_train=args.mosaics[0], num_test=args.mosaics[1], seed=args.seed)
    scores = {}
    with torch.enable_grad():  # the probe's head trains
        for block in blocks:
            scores[str(block)] = probe.score_encoder(backbone, block)
            print(f'block {block}: mIoU {scores[str(block)]["miou"]:.2f}, pixel accuracy '
                  f'{scores[str(block)]["pixel_acc"]:.2f}')
        if args.pixels:
            scores['raw_pixels'] = probe.score_pixels()
            print(f'raw pixels: mIoU {scores["raw_pixels"]["miou"]:.2f}, pixel accuracy '
                  f'{scores["raw_pixels"]["pixel_acc"]:.2f}')
    result = dict(config=args.config, checkpoint=args.checkpoint, labels_from=labels_from,
                  mosaics=list(args.mosaics), seed=args.seed, scores=scores)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    print(json.dumps(result))
    return result


if __name__ == '__main__':
    main()
