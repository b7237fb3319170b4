"""The visualisation tools' common arguments and user images at the encoder's input size
(models come from :func:`repre_mm.apis.init_model`)."""
import argparse
import os.path as osp
from typing import Tuple

import mmcv
import numpy as np
import torch
from mmengine.config import DictAction
from torch import nn

from ..apis import init_model


def visualiser_parser(description: str, config_help: str,
                      default_out: str) -> argparse.ArgumentParser:
    """The arguments every visualisation tool takes: config, checkpoint, images, --out,
    --img-size, --scale, --device, --cfg-options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help=config_help)
    parser.add_argument('checkpoint', help='its checkpoint (every key must match)')
    parser.add_argument('images', nargs='+', help='image files (colour or grey, any size)')
    parser.add_argument('--out', default=default_out, help='output folder')
    parser.add_argument('--img-size', type=int,
                        help='input size (default: the encoder\'s img_size)')
    parser.add_argument('--scale', type=int, help='upscaling of the PNG (default: panels of '
                        'at least 112 pixels)')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser


def model_and_size(args: argparse.Namespace) -> Tuple[nn.Module, Tuple[int, int]]:
    """The model of a visualiser's ``config`` / ``checkpoint`` on ``--device`` and the input size
    (``--img-size`` or the encoder's). The whole model must load: a bare backbone is refused,
    since a decoder left at its initial weights would draw plausible but wrong pictures."""
    model = init_model(args.config, args.checkpoint, args.device, args.cfg_options,
                       bare_backbone=False)
    return model, (args.img_size, ) * 2 if args.img_size else input_size(model)


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
