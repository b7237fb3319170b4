"""User images at the encoder's input size, for the visualisation tools (models come from
:func:`repre_mm.apis.init_model`)."""
import os.path as osp
from typing import Tuple

import mmcv
import numpy as np
from torch import nn


def input_size(model: nn.Module) -> Tuple[int, int]:
    """(H, W) the encoder was built for (``img_size`` of an mmpretrain ViT or Swin)."""
    size = getattr(getattr(model.backbone, 'patch_embed', None), 'init_input_size', None)
    if size is None:
        raise TypeError(f'cannot tell the input size of {type(model.backbone).__name__}: pass '
                        f'--img-size.')
    return tuple(size)


def read_image(path: str, size: Tuple[int, int]) -> np.ndarray:
    """An image file (colour or grey, any size) as the encoder sees it at evaluation.

    The shorter side is resized to fit ``size`` and the centre is cropped, so the aspect ratio
    is kept (as in mmpretrain's evaluation pipelines).

    Returns:
        ndarray: size[0] x size[1] x 3 uint8, BGR (mmcv's order, as the data pipeline gives it).
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is not a file.')
    img = mmcv.imread(path, flag='color')  # grey images come back with 3 equal channels
    if img is None:
        raise ValueError(f'{path} is not an image mmcv can read.')
    th, tw = size
    h, w = img.shape[:2]
    ratio = max(th / h, tw / w)
    nh, nw = max(th, round(h * ratio)), max(tw, round(w * ratio))
    img = mmcv.imresize(img, (nw, nh), interpolation='bicubic', backend='pillow')
    top, left = (nh - th) // 2, (nw - tw) // 2
    return np.ascontiguousarray(img[top:top + th, left:left + tw])
