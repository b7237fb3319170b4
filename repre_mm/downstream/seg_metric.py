"""mmseg's IoUMetric, with the per-class IoU in the returned metrics.

mmseg's ``IoUMetric`` prints the per-class table to the log but returns only the means (aAcc,
mIoU, mAcc). A benchmark that reports per-class IoU would have to parse the log; this subclass
also returns ``IoU.<class>`` (percent; NaN for a class absent from both the ground truth and the
predictions), so ``tools/test.py --out metrics.json --out-item metrics`` writes them.
"""
from collections import OrderedDict
from typing import Dict, List

import numpy as np
import torch
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` whose results also hold ``IoU.<class name>`` for every class."""

    def compute_metrics(self, results: List) -> Dict[str, float]:
        metrics = super().compute_metrics(results)
        results = tuple(zip(*results))
        area_intersect = sum(results[0])
        area_union = sum(results[1])
        if isinstance(area_intersect, torch.Tensor):
            area_intersect, area_union = area_intersect.numpy(), area_union.numpy()
        with np.errstate(divide='ignore', invalid='ignore'):
            iou = area_intersect / area_union * 100
        per_class = OrderedDict(
            (f'IoU.{name}', round(float(value), 2))
            for name, value in zip(self.dataset_meta['classes'], iou))
        metrics.update(per_class)
        return metrics
