"""Write Fashion-MNIST as the folder layout mmpretrain's CustomDataset reads.

    data/fashion_mnist/train/<class>/<index>.png
    data/fashion_mnist/test/<class>/<index>.png

Source: the idx files of Debian's ``dataset-fashion-mnist`` package
(``apt-get install dataset-fashion-mnist``; /usr/share/datasets/fashion-mnist), or, where that
package cannot be installed, the 5,000-image subset shipped in ``repre_mm/data`` (same licence).
Fashion-MNIST: Zalando Research, MIT licence (see repre_mm/data/FASHION_MNIST_LICENSE).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
from repre_mm.datasets.fashion_mnist import (CLASSES, DEBIAN_DIR,  # noqa: E402
                                             load_fashion_mnist, write_image_folder)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--source', default=DEBIAN_DIR,
                        help='folder with the four idx .gz files (default: Debian package path)')
    parser.add_argument('--out', default='data/fashion_mnist', help='output folder')
    parser.add_argument('--train-per-class', type=int, default=None,
                        help='keep the first N training images of each class (default: all)')
    parser.add_argument('--test-per-class', type=int, default=None,
                        help='keep the first N test images of each class (default: all)')
    return parser.parse_args()


def main():
    args = parse_args()
    data, source = load_fashion_mnist(args.source)
    print(f'source: {source}')
    for split, per_class in (('train', args.train_per_class), ('test', args.test_per_class)):
        images, labels = data[split]
        counts = write_image_folder(osp.join(args.out, split), images, labels, per_class)
        print(f'{split}: {sum(counts.values())} images -> {osp.join(args.out, split)} '
              f'({", ".join(f"{CLASSES[c]} {n}" for c, n in sorted(counts.items()))})')


if __name__ == '__main__':
    main()
