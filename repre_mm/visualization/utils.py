"""Models from a config and a checkpoint, and user images at the encoder's input size, for the
visualisation tools."""
import os.path as osp
from typing import Optional, Tuple

import mmcv
import numpy as np
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from mmpretrain.registry import MODELS
from ..utils.checkpoint import load_strict, load_weights


def load_model(config: str, checkpoint: Optional[str], device: str = 'cpu',
               cfg_options: Optional[dict] = None) -> nn.Module:
    """The pre-training model of ``config`` with the weights of ``checkpoint``, in eval mode.

    Args:
        config (str): a pre-training config (RePre or baseline).
        checkpoint (str, optional): an mmengine checkpoint or a bare state dict; every key must
            match (a half-loaded model would show plausible but wrong pictures). None keeps the
            initial weights (for tests and smoke runs).
        device (str): e.g. ``'cpu'`` or ``'cuda:0'``.
        cfg_options (dict, optional): overrides merged into the config.
    """
    init_default_scope('mmpretrain')  # the model is built outside a Runner
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_strict(model, load_weights(checkpoint), source=checkpoint)
    return model.to(device).eval()


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
