"""A reference for Mask R-CNN's masks: the detector's own boxes, filled, scored as masks.

A mask head that has learned the objects' shapes beats the boxes it predicts masks in; one that
has not (chance-level mask loss, scrambled RoI features) scores at or below them. mmdet's
``CocoMetric`` scores the predicted masks; this subclass scores, from the same predictions, each
detection's box filled as its mask (``segm`` metrics under its own ``prefix``), so that one
``tools/test.py`` run reports both.
"""
from typing import Sequence

import numpy as np
import torch
from mmdet.evaluation import CocoMetric
from mmdet.registry import METRICS


def box_masks(bboxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """N x height x width bool masks, each its box (``x1, y1, x2, y2`` in pixels) filled: the
    pixels whose centres lie inside the box."""
    masks = np.zeros((len(bboxes), height, width), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, bboxes):
        left, top = max(0, int(np.round(x1))), max(0, int(np.round(y1)))
        right, bottom = min(width, int(np.round(x2))), min(height, int(np.round(y2)))
        mask[top:bottom, left:right] = True
    return masks


@METRICS.register_module()
class BoxMaskCocoMetric(CocoMetric):
    """``CocoMetric`` over the predicted boxes filled as masks (the predicted masks unread).

    Args:
        prefix (str): The metrics' prefix. Defaults to ``'box_mask'``:
            ``box_mask/segm_mAP``, ``box_mask/segm_mAP_50``, ...
        **kwargs: ``CocoMetric``'s arguments; ``metric`` defaults to ``'segm'``.
    """
    default_prefix = 'box_mask'

    def __init__(self, metric='segm', **kwargs):
        super().__init__(metric=metric, **kwargs)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        filled = []
        for sample in data_samples:
            pred = dict(sample['pred_instances'])  # a copy: the other metrics read the same
            height, width = sample['ori_shape']
            bboxes = pred['bboxes'].detach().cpu().numpy()
            pred['masks'] = torch.from_numpy(box_masks(bboxes, height, width))
            filled.append(dict(sample, pred_instances=pred))
        super().process(data_batch, filled)
