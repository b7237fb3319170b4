"""A frozen linear probe for semantic segmentation on real images.

A 1x1 linear head is fitted on the standardised patch tokens of one block of a frozen ViT (or
its final norm), with each patch's label histogram (ignored pixels left out) as a soft target,
on the training split. Its logits are upsampled bilinearly to each test label's own size and
scored as semantic segmentation: per-class IoU and their mean over the classes that occur (in
the ground truth or the prediction), as mmseg's IoUMetric does. The raw-pixel reference is the
same probe on each patch's pixels.

Images are resized, aspect ratio kept, to a short side of ``short_side`` pixels, both sides
rounded to a multiple of the patch; images of several sizes and orientations are grouped by
their resized shape.
"""
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .dense_probe import FINAL, patch_token_maps, pixel_patch_maps
from .linear import fit_linear

IGNORE = 255


def probe_size(height: int, width: int, short_side: int, patch: int) -> Tuple[int, int]:
    """(h, w) of an image resized to ``short_side`` on its short side, aspect ratio kept, each
    side a multiple of ``patch`` (at least one patch)."""
    scale = short_side / min(height, width)
    return (max(patch, round(height * scale / patch) * patch),
            max(patch, round(width * scale / patch) * patch))


def iou_scores(confusion: torch.Tensor, classes: Sequence[str]) -> Dict[str, object]:
    """mIoU (percent, over the classes whose union is not empty) and per-class IoU (None for a
    class absent from both ground truth and prediction) of a K x K confusion matrix
    (rows: ground truth, columns: prediction)."""
    confusion = confusion.double()
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter)) * 100
    return dict(miou=iou[present].mean().item(),
                pixel_acc=(inter.sum() / confusion.sum().clamp_min(1)).item() * 100,
                per_class={c: (round(iou[i].item(), 2) if present[i] else None)
                           for i, c in enumerate(classes)})


class SegmentationProbe:
    """Images and labels read once, then any number of encoders scored on the same ones.

    Args:
        train_pairs, test_pairs (list): (image path, label path) of each split; labels hold a
            class id per pixel, 255 = ignore.
        classes (list[str]): class names; label values are their indices.
        short_side (int): the probe's image short side in pixels.
        patch (int): the encoders' patch size.
        mean, std (Sequence[float]): RGB normalisation of the encoders (their preprocessor's).
        steps (int): full-batch AdamW steps of the linear fit.
        max_train_patches (int): patches the head is fitted on (drawn with ``seed``).
    """

    def __init__(self, train_pairs: List[Tuple[str, str]], test_pairs: List[Tuple[str, str]],
                 classes: Sequence[str], short_side: int, patch: int, mean, std,
                 steps: int = 300, max_train_patches: int = 60000, seed: int = 0):
        self.classes = list(classes)
        self.num_classes = len(classes)
        self.patch, self.steps, self.seed = patch, steps, seed
        self.max_train_patches = max_train_patches
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.train = self._load(train_pairs, short_side, full_labels=False)
        self.test = self._load(test_pairs, short_side, full_labels=True)

    def _load(self, pairs, short_side, full_labels) -> Dict[tuple, dict]:
        """{resized shape: dict(images=N x 3 x h x w normalised, labels=...)}: the training
        split keeps each patch's label histogram, the test split the full-size labels."""
        import cv2
        groups: Dict[tuple, dict] = {}
        for image_path, label_path in pairs:
            image = cv2.imread(image_path, cv2.IMREAD_COLOR)[..., ::-1]
            label = cv2.imread(label_path, cv2.IMREAD_UNCHANGED)
            h, w = probe_size(*image.shape[:2], short_side, self.patch)
            image = cv2.resize(np.ascontiguousarray(image), (w, h),
                               interpolation=cv2.INTER_AREA)
            group = groups.setdefault((h, w), dict(images=[], labels=[]))
            group['images'].append(torch.from_numpy(image).permute(2, 0, 1).float())
            label = torch.from_numpy(label.astype(np.int64))
            group['labels'].append(label if full_labels else
                                   self._patch_histogram(label, h // self.patch, w // self.patch))
        for group in groups.values():
            group['images'] = (torch.stack(group['images']) - self.mean) / self.std
            if not full_labels:
                group['labels'] = torch.stack(group['labels'])
        return groups

    def _patch_histogram(self, label: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(K + 1) x h x w: the share of each class among a patch's pixels, and (last) the share
        of labelled pixels. The label is pooled at its own size onto the token grid."""
        valid = label != IGNORE
        onehot = F.one_hot(torch.where(valid, label, self.num_classes),
                           self.num_classes + 1)[..., :self.num_classes]
        counts = torch.cat([onehot, valid[..., None].long()], -1).permute(2, 0, 1).float()
        pooled = F.adaptive_avg_pool2d(counts[None], (h, w))[0]
        share = pooled[:-1] / pooled[-1:].clamp_min(1e-6)
        return torch.cat([share, pooled[-1:]])

    def _maps(self, features, groups) -> List[torch.Tensor]:
        return [features(group['images']) for group in groups.values()]

    def score(self, features) -> Dict[str, object]:
        """Scores of ``features`` (N x 3 x h x w normalised images -> N x C x h' x w' maps, h'
        = h / patch): mIoU, pixel accuracy and per-class IoU on the test split, in percent."""
        x, soft = [], []
        for maps, group in zip(self._maps(features, self.train), self.train.values()):
            labels = group['labels']  # N x (K + 1) x h x w
            keep = labels[:, -1] > 0.5  # patches that are mostly labelled
            x.append(maps.permute(0, 2, 3, 1)[keep])
            soft.append(labels[:, :-1].permute(0, 2, 3, 1)[keep])
        x, soft = torch.cat(x), torch.cat(soft)
        soft = soft / soft.sum(1, keepdim=True).clamp_min(1e-6)
        generator = torch.Generator().manual_seed(self.seed)
        if x.shape[0] > self.max_train_patches:
            keep = torch.randperm(x.shape[0], generator=generator)[:self.max_train_patches]
            x, soft = x[keep], soft[keep]
        mean, std = x.mean(0), x.std(0) + 1e-6
        weight, bias = fit_linear((x - mean) / std, soft, self.num_classes, self.steps, 0.02,
                                  1e-4, generator)
        k = self.num_classes
        confusion = torch.zeros(k * k, dtype=torch.long)
        with torch.no_grad():
            for maps, group in zip(self._maps(features, self.test), self.test.values()):
                logits = ((maps.permute(0, 2, 3, 1) - mean) / std @ weight.T + bias)
                logits = logits.permute(0, 3, 1, 2)
                for one, label in zip(logits, group['labels']):
                    pred = F.interpolate(one[None], size=label.shape, mode='bilinear',
                                         align_corners=False)[0].argmax(0)
                    valid = label != IGNORE
                    if (label[valid] >= k).any():
                        raise ValueError(f'a test label holds {int(label[valid].max())}, not a '
                                         f'class id below {k} or {IGNORE}.')
                    confusion += torch.bincount(label[valid] * k + pred[valid], minlength=k * k)
        return iou_scores(confusion.reshape(k, k), self.classes)

    def score_encoder(self, backbone, block: Union[int, str] = FINAL) -> Dict[str, object]:
        """The probe on ``backbone``'s ``block`` tokens (``'final'``: after the final norm)."""
        return self.score(lambda images: patch_token_maps(backbone, images, block))

    def score_pixels(self) -> Dict[str, object]:
        """The probe on each patch's raw pixels (all channels): the reference an encoder must
        beat to have learned anything beyond colour."""
        return self.score(lambda images: pixel_patch_maps(images, self.patch))
