"""Validation splits carved out of a training split, by image, with a fixed seed."""
import copy
from typing import List, Tuple

import numpy as np


def carve(count: int, fraction: float, seed: int = 0) -> List[int]:
    """The sorted indices of ``round(fraction * count)`` of ``count`` items, drawn with ``seed``.

    Raises ValueError when the fraction leaves either part empty.
    """
    carved = int(round(fraction * count))
    if not 0 < carved < count:
        raise ValueError(f'a fraction of {fraction} of {count} images is {carved}: both the '
                         f'validation and the training part need at least one image.')
    picked = np.random.default_rng(seed).choice(count, carved, replace=False)
    return sorted(int(i) for i in picked)


def split_coco(coco: dict, fraction: float, seed: int = 0) -> Tuple[dict, dict]:
    """(the rest, the carved part) of a COCO instances dict: the images :func:`carve` picks
    (in image-id order), each with all of its annotations; ``info``, ``licenses`` and
    ``categories`` copied into both."""
    images = sorted(coco['images'], key=lambda im: im['id'])
    carved_ids = {images[i]['id'] for i in carve(len(images), fraction, seed)}
    parts = []
    for keep in (lambda i: i not in carved_ids, lambda i: i in carved_ids):
        part = {k: copy.deepcopy(v) for k, v in coco.items() if k not in ('images', 'annotations')}
        part['images'] = [im for im in images if keep(im['id'])]
        part['annotations'] = [a for a in coco['annotations'] if keep(a['image_id'])]
        parts.append(part)
    return parts[0], parts[1]
