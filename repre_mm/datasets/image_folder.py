"""What a small-scale run needs to know about an ImageFolder (``root/<split>/<class>/*``).

mmpretrain's ``CustomDataset`` reads such a folder for training; this module looks at the
images once, so that a generated config can follow the data: image size, colour or grey,
channel statistics, and a patch size that gives the ViT a small token grid.
"""
import os
import os.path as osp
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')


def list_image_folder(root: str) -> Tuple[List[str], List[Tuple[str, int]]]:
    """(classes in sorted order, [(path, label)]) of ``root/<class>/*``: CustomDataset's order
    and labels."""
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root} is not a folder; an ImageFolder has '
                                f'<root>/train/<class>/* and <root>/test/<class>/*.')
    classes = sorted(d for d in os.listdir(root) if osp.isdir(osp.join(root, d)))
    samples = [(osp.join(root, c, f), label) for label, c in enumerate(classes)
               for f in sorted(os.listdir(osp.join(root, c)))
               if f.lower().endswith(IMAGE_EXTENSIONS)]
    if not samples:
        raise FileNotFoundError(f'{root} holds no images in class folders ({classes[:5]}); '
                                f'expected {root}/<class>/*.jpg or *.png.')
    return classes, samples


def read_rgb(path: str, size: int = None) -> np.ndarray:
    """An image as H x W x 3 RGB uint8 (grey images get three equal channels), resized to
    size x size if given."""
    import cv2
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f'cannot read image {path}.')
    if size is not None and image.shape[:2] != (size, size):
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return image[..., ::-1].copy()


def load_image_folder(root: str, size: int = None, per_class: int = None
                      ) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """(N x size x size x 3 RGB uint8 images, N labels, classes), the first ``per_class``
    images of each class."""
    classes, samples = list_image_folder(root)
    if per_class is not None:
        counts = {}
        kept = []
        for path, label in samples:
            counts[label] = counts.get(label, 0) + 1
            if counts[label] <= per_class:
                kept.append((path, label))
        samples = kept
    images = np.stack([read_rgb(p, size) for p, _ in samples])
    return images, np.array([label for _, label in samples], np.int64), classes


@dataclass
class FolderInfo:
    """What a run's config takes from the data."""
    classes: List[str]
    num_train: int
    num_test: int
    img_size: int  # side of the square the images are trained at
    same_size: bool  # all images already are img_size x img_size
    colour: bool  # some image has channels that differ
    mean: List[float]  # RGB, 0-255, over the training images
    std: List[float]
    patch: int


def choose_patch(img_size: int, tokens_per_side: int = 7) -> int:
    """The largest power of two (4 to 32) that leaves at least ``tokens_per_side`` tokens."""
    patch = 4
    while patch * 2 <= 32 and img_size // (patch * 2) >= tokens_per_side:
        patch *= 2
    return patch


def image_statistics(paths: List[str], size: int = None
                     ) -> Tuple[List[float], List[float], bool]:
    """(RGB mean, RGB std, colour?) over the pixels of ``paths`` (0-255), each image resized to
    size x size if given: what a data_preprocessor's mean / std should be."""
    total, total_sq, count, colour = np.zeros(3), np.zeros(3), 0, False
    for path in paths:  # running sums: large images never sit in memory together
        image = read_rgb(path, size).reshape(-1, 3).astype(np.float64)
        total += image.sum(0)
        total_sq += (image**2).sum(0)
        count += image.shape[0]
        colour = colour or bool(np.any(image[:, 0] != image[:, 1]) or
                                np.any(image[:, 1] != image[:, 2]))
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0))
    return [round(float(v), 2) for v in mean], [round(float(v), 2) for v in std], colour


def inspect_image_folder(root: str, max_stat_images: int = 5000, seed: int = 0) -> FolderInfo:
    """Reads ``root/train`` and ``root/test`` once: sizes, colour, channel mean and std (over at
    most ``max_stat_images`` training images, at the training size)."""
    classes, train = list_image_folder(osp.join(root, 'train'))
    test_classes, test = list_image_folder(osp.join(root, 'test'))
    if test_classes != classes:
        raise ValueError(f'{root}/train and {root}/test have different class folders: '
                         f'{classes} vs {test_classes}.')
    import cv2
    rng = np.random.default_rng(seed)
    picked = [train[i][0] for i in rng.permutation(len(train))[:max_stat_images]]
    shapes = []
    for path in picked:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if image is None:
            raise OSError(f'cannot read image {path}.')
        shapes.append(image.shape[:2])
    sides = [min(s) for s in shapes]
    img_size = int(np.median(sides))
    patch = choose_patch(img_size)
    img_size -= img_size % patch  # a whole number of patches
    mean, std, colour = image_statistics(picked, img_size)
    return FolderInfo(
        classes=classes, num_train=len(train), num_test=len(test), img_size=img_size,
        same_size=all(s == (img_size, img_size) for s in shapes), colour=colour,
        mean=mean, std=std, patch=patch)
