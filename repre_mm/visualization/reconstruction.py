"""What the RePre decoder reconstructs from the encoder's levels, as pixels and as image grids.

Shared by ``tools/visualization/vis_reconstruction.py``, ``ReconstructionVisualizationHook`` and
the small-scale benchmark.
"""
import math
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn


def require_repre(model: nn.Module, what: str) -> None:
    """Raise a clear error when ``model`` is not a RePre model (it has no decoder to show)."""
    if not (isinstance(getattr(model, 'decoder', None), nn.Module) and hasattr(model, 'tap')):
        raise TypeError(f'{type(model).__name__} has no decoder: {what} needs a RePre config '
                        f'(model type RePre, e.g. configs/repre/*.py).')


def reconstruct(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The decoder's prediction for ``images``, in the normalised image space.

    The online encoder runs once under the level tap, exactly as in training; with a
    ``norm_pix`` target the decoder predicts per-patch normalised pixels, so each patch's mean
    and standard deviation (of the input) are put back to make the prediction comparable.

    Args:
        model (RePre): the model (its ``backbone``, ``tap``, ``decoder`` and ``rec_head``).
        images (Tensor): normalised views, B x 3 x H x W.

    Returns:
        Tensor: B x 3 x H x W, in the space of ``images``.
    """
    with model.tap.record() as calls:
        model.backbone(images)
    pred = model.decoder(calls[0].levels)
    head = model.rec_head
    if head.norm_pix:
        p = head.patch_size
        B, C, H, W = images.shape
        patches = images.reshape(B, C, H // p, p, W // p, p)
        mean = patches.mean(dim=(1, 3, 5), keepdim=True)
        std = (patches.var(dim=(1, 3, 5), keepdim=True) + 1e-6)**.5
        pred = (pred.reshape(B, C, H // p, p, W // p, p) * std + mean).reshape(B, C, H, W)
    return pred


def to_pixels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Undo the data preprocessor's normalisation.

    Args:
        model: a model whose ``data_preprocessor`` has ``mean`` and ``std`` (3 x 1 x 1).
        x (Tensor): normalised images, N x 3 x H x W (RGB when the preprocessor converts).

    Returns:
        Tensor: N x H x W x 3 float pixels in [0, 255].
    """
    preprocessor = model.data_preprocessor
    return (x * preprocessor.std + preprocessor.mean).clamp(0, 255).permute(0, 2, 3, 1)


def normalise(model: nn.Module, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Images as the data pipeline delivers them (H x W x 3 uint8 BGR, as mmcv loads them, or
    3 x H x W tensors from ``PackInputs``), normalised by the model's data preprocessor on the
    model's device.

    Returns:
        Tensor: B x 3 x H x W float (channel order and statistics as in training).
    """
    batch = torch.stack([
        torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        if isinstance(img, np.ndarray) else img for img in images
    ])
    # the preprocessor converts BGR -> RGB (to_rgb) and normalises, as for a training batch
    return model.data_preprocessor(dict(inputs=batch, data_samples=None), False)['inputs']


def default_scale(size: int, target: int = 112) -> int:
    """Integer upscaling that makes a panel of ``size`` pixels at least ``target`` wide: a
    28-pixel Fashion-MNIST view is unreadable at its own size."""
    return max(1, math.ceil(target / size))


def tile(panels, scale: int = 1) -> np.ndarray:
    """Rows of equally sized H x W x 3 panels -> one uint8 image, upscaled (nearest) by ``scale``.

    Args:
        panels (list[list[ndarray | Tensor]]): ``panels[r][c]``, each H x W x 3 in [0, 255].
        scale (int): nearest-neighbour upscaling of the whole grid (pixels stay sharp).

    Returns:
        ndarray: (rows * H * scale) x (cols * W * scale) x 3 uint8, RGB.
    """
    rows = [
        np.concatenate([np.asarray(p, dtype=np.float32) for p in row], axis=1) for row in panels
    ]
    grid = np.concatenate(rows, axis=0).round().clip(0, 255).astype(np.uint8)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


@torch.no_grad()
def reconstruction_grid(model: nn.Module,
                        images: torch.Tensor,
                        scale: Optional[int] = None,
                        images_as_rows: bool = False) -> np.ndarray:
    """Input views, their reconstructions and the absolute error, as one colour image.

    The error panel is |reconstruction - input| per RGB channel on the 0-255 scale (black:
    exact), so its colour tells which channel is missed.

    Args:
        model (RePre): the model (evaluation mode is the caller's choice).
        images (Tensor): normalised views, B x 3 x H x W.
        scale (int, optional): upscaling of the grid; defaults to :func:`default_scale`.
        images_as_rows (bool): one row per image (input | reconstruction | error) instead of
            one row per kind (inputs / reconstructions / errors) and a column per image.

    Returns:
        ndarray: RGB uint8, 3H x BW (or BH x 3W with ``images_as_rows``), times ``scale``.
    """
    original = to_pixels(model, images.float()).cpu()
    pred = to_pixels(model, reconstruct(model, images).float()).cpu()
    kinds = [original, pred, (pred - original).abs()]
    if images_as_rows:
        panels = [[kind[i] for kind in kinds] for i in range(len(images))]
    else:
        panels = [list(kind) for kind in kinds]
    if scale is None:
        scale = default_scale(max(images.shape[-2:]))
    return tile(panels, scale)
