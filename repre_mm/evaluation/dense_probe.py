"""A dense (per-pixel) linear probe of frozen ViT patch tokens, on mosaics of labelled images.

RePre's claim is about *local* features; an image-level k-NN cannot see them. This probe asks
the question a segmentation head asks: from the patch tokens alone, which object is under each
pixel? Test and training mosaics are built from a labelled image set (e.g. Fashion-MNIST):

    canvas (2x2 cells, each cell = item size + margin), item at a random offset in its cell,
    some cells left empty; label of a pixel = class of the item under it, or background.

A linear 1x1 head is trained on the standardised patch tokens of one block (or of the final
norm) with each patch's label histogram as a soft target; its logits are upsampled bilinearly
to the pixels and scored as semantic segmentation (mIoU over classes + background, pixel
accuracy). The mosaics are generated from a fixed seed, so every encoder sees the same ones.
"""
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmpretrain.models.backbones import VisionTransformer
from .linear import fit_linear
# check_block stays importable from here: tools/benchmarks/dense_probe.py reads it
from .tokens import FINAL, block_tokens, check_block, patch_maps  # noqa: F401


def make_mosaics(images: np.ndarray, labels: np.ndarray, num: int, num_classes: int,
                 cell: int, seed: int = 0, labels_from: str = 'mask', grid: int = 2,
                 empty_prob: float = 0.2, fg_threshold: int = 16
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Mosaics of ``images`` and their pixel labels.

    Args:
        images (np.ndarray): N x S x S x C uint8 items (any channel order; it is kept).
        labels (np.ndarray): N class indices in [0, num_classes).
        num (int): mosaics to make.
        num_classes (int): item classes; the background gets index ``num_classes``.
        cell (int): side of a cell, at least the item side S.
        seed (int): the generator seed: equal seeds give equal mosaics.
        labels_from (str): ``'mask'``: a pixel belongs to the item where the item is brighter
            than ``fg_threshold`` in some channel (items on a dark background, Fashion-MNIST);
            ``'box'``: the item's whole square is the item (photos).
        grid (int): cells per side. empty_prob (float): chance that a cell stays empty.

    Returns:
        (num x H x W x C uint8 canvases, num x H x W int64 labels) with H = W = grid * cell.
    """
    if labels_from not in ('mask', 'box'):
        raise ValueError(f"labels_from={labels_from!r} is not 'mask' or 'box'.")
    n, size = images.shape[0], images.shape[1]
    if images.shape[1] != images.shape[2] or cell < size:
        raise ValueError(f'items must be square and fit a cell: items {images.shape[1:3]}, '
                         f'cell {cell}.')
    rng = np.random.default_rng(seed)
    side = grid * cell
    canvases = np.zeros((num, side, side, images.shape[3]), np.uint8)
    targets = np.full((num, side, side), num_classes, np.int64)
    for m in range(num):
        for gy in range(grid):
            for gx in range(grid):
                if rng.random() < empty_prob:
                    continue
                i = rng.integers(n)
                y = gy * cell + rng.integers(cell - size + 1)
                x = gx * cell + rng.integers(cell - size + 1)
                item = images[i]
                canvases[m, y:y + size, x:x + size] = item
                covered = (item.max(axis=2) > fg_threshold) if labels_from == 'mask' else True
                targets[m, y:y + size, x:x + size] = np.where(covered, labels[i], num_classes)
    return canvases, targets


@torch.no_grad()
def patch_token_maps(backbone: VisionTransformer, images: torch.Tensor,
                     block: Union[int, str] = FINAL, batch_size: int = 128) -> torch.Tensor:
    """Patch tokens of ``block`` as maps: N x C x h x w for normalised N x 3 x H x W images.

    Images larger than the backbone's training size use its interpolated position embedding,
    as a detection or segmentation transfer does.

    Args:
        backbone (VisionTransformer): the frozen encoder (run in eval mode, then restored).
        images (Tensor): N x 3 x H x W normalised images, on the backbone's device.
        block (int | str): a zero-based block index, or ``'final'`` (after the final norm);
            see :func:`repre_mm.evaluation.tokens.block_tokens`.
        batch_size (int): images per forward pass. Defaults to 128.

    Returns:
        Tensor: N x C x h x w float32, h = H // patch.
    """
    was_training = backbone.training
    backbone.eval()
    maps = []
    try:
        for chunk in images.split(batch_size):
            with block_tokens(backbone, block) as tokens:
                backbone(chunk)
            maps.append(patch_maps(backbone, tokens[0], chunk.shape[2]).float())
    finally:
        backbone.train(was_training)
    return torch.cat(maps)


def pixel_patch_maps(images: torch.Tensor, patch: int) -> torch.Tensor:
    """The raw-pixel reference: every patch's pixels (all channels) as its feature,
    N x (C * patch * patch) x h x w."""
    n, c, h, w = images.shape
    return F.unfold(images.float(), patch, stride=patch).reshape(n, c * patch * patch,
                                                                 h // patch, w // patch)


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor,
                        num_labels: int) -> Dict[str, float]:
    """mIoU (over labels present in the prediction or the ground truth) and pixel accuracy, in
    percent."""
    confusion = torch.bincount(target.flatten() * num_labels + pred.flatten(),
                               minlength=num_labels**2).reshape(num_labels, num_labels).double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    return dict(miou=(inter[present] / union[present]).mean().item() * 100,
                pixel_acc=(inter.sum() / confusion.sum()).item() * 100)


def dense_linear_probe(train_maps: torch.Tensor, train_labels: torch.Tensor,
                       test_maps: torch.Tensor, test_labels: torch.Tensor, num_labels: int,
                       steps: int = 200, lr: float = 0.02, weight_decay: float = 1e-4,
                       max_train_patches: int = 40000, seed: int = 0) -> Dict[str, float]:
    """Trains a 1x1 linear head on frozen feature maps and scores it at pixel resolution.

    Full-batch AdamW on the cross-entropy against each patch's label histogram, on at most
    ``max_train_patches`` patches drawn with ``seed`` (the same patches for every encoder).

    Args:
        train_maps, test_maps (Tensor): N x C x h x w features (each patch one sample).
        train_labels, test_labels (Tensor): N x H x W pixel labels in [0, num_labels), H a
            multiple of h.
        num_labels (int): classes including the background.

    Returns:
        dict(miou, pixel_acc) on the test maps, in percent.
    """
    c = train_maps.shape[1]
    x = train_maps.permute(0, 2, 3, 1).reshape(-1, c)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = (x - mean) / std
    # soft target: the label histogram of each patch's pixels
    onehot = F.one_hot(train_labels, num_labels).permute(0, 3, 1, 2).float()
    soft = F.adaptive_avg_pool2d(onehot, train_maps.shape[2:])
    soft = soft.permute(0, 2, 3, 1).reshape(-1, num_labels)
    generator = torch.Generator().manual_seed(seed)
    if x.shape[0] > max_train_patches:
        keep = torch.randperm(x.shape[0], generator=generator)[:max_train_patches]
        x, soft = x[keep], soft[keep]
    weight, bias = fit_linear(x, soft, num_labels, steps, lr, weight_decay, generator)
    with torch.no_grad():
        xt = (test_maps.permute(0, 2, 3, 1) - mean) / std
        logits = (xt @ weight.T + bias).permute(0, 3, 1, 2)
        logits = F.interpolate(logits, size=test_labels.shape[1:], mode='bilinear',
                               align_corners=False)
        return segmentation_scores(logits.argmax(1), test_labels, num_labels)


class DenseProbe:
    """Mosaics made once, then any number of encoders scored on the same ones.

    Args:
        train_items, test_items: (N x S x S x 3 uint8 RGB images, N labels) each; training
            mosaics are built from the first, test mosaics from the second.
        num_classes (int): item classes (background is one more label).
        patch (int): the encoders' patch size; the cell side is rounded up to a multiple of it.
        mean, std (Sequence[float]): RGB normalisation of the encoders (their preprocessor's).
        labels_from (str): see :func:`make_mosaics`.
        num_train, num_test (int): mosaics of each split. seed (int): generation seed.
    """

    def __init__(self, train_items: Tuple[np.ndarray, np.ndarray],
                 test_items: Tuple[np.ndarray, np.ndarray], num_classes: int, patch: int,
                 mean, std, labels_from: str = 'mask', num_train: int = 400,
                 num_test: int = 200, seed: int = 0):
        size = train_items[0].shape[1]
        margin = max(patch, size // 4)
        cell = -(-(size + margin) // patch) * patch
        self.num_labels = num_classes + 1
        self.patch = patch
        mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.images, self.labels = {}, {}
        for split, (items, item_labels), num, split_seed in (
                ('train', train_items, num_train, seed), ('test', test_items, num_test,
                                                          seed + 1)):
            canvas, target = make_mosaics(items, item_labels, num, num_classes, cell,
                                          seed=split_seed, labels_from=labels_from)
            raw = torch.from_numpy(canvas).permute(0, 3, 1, 2).float()
            self.images[split] = (raw - mean) / std
            self.labels[split] = torch.from_numpy(target)

    def score_maps(self, train_maps: torch.Tensor, test_maps: torch.Tensor) -> Dict[str, float]:
        return dense_linear_probe(train_maps, self.labels['train'], test_maps,
                                  self.labels['test'], self.num_labels)

    def score_encoder(self, backbone: VisionTransformer,
                      block: Union[int, str] = FINAL) -> Dict[str, float]:
        """mIoU and pixel accuracy of a linear probe on ``backbone``'s ``block`` tokens."""
        return self.score_maps(*(patch_token_maps(backbone, self.images[s], block)
                                 for s in ('train', 'test')))

    def score_pixels(self) -> Dict[str, float]:
        """The same probe on each patch's raw pixels."""
        return self.score_maps(*(pixel_patch_maps(self.images[s], self.patch)
                                 for s in ('train', 'test')))


def default_block(backbone: nn.Module) -> Optional[int]:
    """The middle block (zero-based depth // 2): an intermediate level for the probe."""
    return len(backbone.layers) // 2
