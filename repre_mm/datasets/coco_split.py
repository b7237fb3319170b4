"""A validation split carved out of a COCO instances file, by image, with a fixed seed."""
import copy
from typing import Tuple

import numpy as np


def split_coco(coco: dict, fraction: float, seed: int = 0) -> Tuple[dict, dict]:
    """(the rest, the carved part): ``round(fraction * images)`` images drawn with ``seed``, each
    with all of its annotations; ``info``, ``licenses`` and ``categories`` copied into both.

    Raises ValueError when the fraction leaves either part without images.
    """
    images = sorted(coco['images'], key=lambda im: im['id'])
    count = int(round(fraction * len(images)))
    if not 0 < count < len(images):
        raise ValueError(f'a fraction of {fraction} of {len(images)} images is {count}: both '
                         f'the validation and the training part need at least one image.')
    picked = np.random.default_rng(seed).choice(len(images), count, replace=False)
    carved_ids = {images[i]['id'] for i in picked}
    parts = []
    for keep in (lambda i: i not in carved_ids, lambda i: i in carved_ids):
        part = {k: copy.deepcopy(v) for k, v in coco.items() if k not in ('images', 'annotations')}
        part['images'] = [im for im in images if keep(im['id'])]
        part['annotations'] = [a for a in coco['annotations'] if keep(a['image_id'])]
        parts.append(part)
    return parts[0], parts[1]
