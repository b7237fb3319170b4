"""Fashion-MNIST from Debian's idx files, or the subset shipped with repre-mm."""
import os
import os.path as osp
from typing import Dict, Optional, Tuple

import numpy as np

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
SUBSET_FILE = osp.join(osp.dirname(__file__), '..', 'data', 'fashion_mnist_subset.npz')
# Folder names sort in label order, as CustomDataset assigns labels by sorted folder name.
CLASSES = ('0_tshirt_top', '1_trouser', '2_pullover', '3_dress', '4_coat', '5_sandal',
           '6_shirt', '7_sneaker', '8_bag', '9_ankle_boot')
_FILES = dict(train=('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
              test=('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'))

Split = Tuple[np.ndarray, np.ndarray]  # N x 28 x 28 uint8 images, N int64 labels


def read_idx(path: str) -> np.ndarray:
    """An idx file (the MNIST format), gzipped or not, as a numpy array: mmpretrain's reader."""
    from mmpretrain.datasets.mnist import read_sn3_pascalvincent_tensor
    return read_sn3_pascalvincent_tensor(path).numpy()


def load_fashion_mnist(source: str = DEBIAN_DIR) -> Tuple[Dict[str, Split], str]:
    """Returns ({'train': (images, labels), 'test': ...}, description of the source)."""
    if all(osp.exists(osp.join(source, f)) for pair in _FILES.values() for f in pair):
        data = {
            split: (read_idx(osp.join(source, img)), read_idx(osp.join(source, lbl)).astype(
                np.int64)) for split, (img, lbl) in _FILES.items()
        }
        return data, f'Fashion-MNIST idx files in {source}'
    if osp.exists(SUBSET_FILE):
        npz = np.load(SUBSET_FILE)
        data = {split: (npz[f'{split}_images'], npz[f'{split}_labels'].astype(np.int64))
                for split in ('train', 'test')}
        return data, (f'{source} has no Fashion-MNIST idx files; using the subset shipped in '
                      f'{osp.normpath(SUBSET_FILE)} (install Debian package '
                      f'dataset-fashion-mnist for the full set)')
    raise FileNotFoundError(
        f'no Fashion-MNIST found: {source} lacks the idx files {sorted(sum(_FILES.values(), ()))} '
        f'and the shipped subset {SUBSET_FILE} is missing. Run '
        f'`apt-get install dataset-fashion-mnist` or pass --source DIR.')


def write_image_folder(out_dir: str, images: np.ndarray, labels: np.ndarray,
                       per_class: Optional[int] = None) -> Dict[int, int]:
    """Write <out_dir>/<class>/<index>.png; files already there are kept. Returns counts."""
    import cv2
    counts: Dict[int, int] = {}
    for index, (image, label) in enumerate(zip(images, labels)):
        label = int(label)
        if per_class is not None and counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = osp.join(out_dir, CLASSES[label])
        path = osp.join(folder, f'{index:05d}.png')
        if not osp.exists(path):
            os.makedirs(folder, exist_ok=True)
            cv2.imwrite(path, image)
    return counts
