from .dense_probe import DenseProbe, dense_linear_probe, make_mosaics, patch_token_maps
from .knn import (FEATURE_KINDS, FeatureShard, backbone_features, feature_shard_from_dataloader,
                  features_from_dataloader, knn_accuracy, knn_predict, knn_topk)
from .linear import fit_linear, linear_probe_accuracy
from .seg_probe import SegmentationProbe
from .tokens import FINAL, block_tokens

__all__ = [
    'DenseProbe', 'dense_linear_probe', 'make_mosaics', 'patch_token_maps',
    'FEATURE_KINDS', 'knn_predict', 'knn_accuracy', 'knn_topk', 'backbone_features',
    'features_from_dataloader', 'feature_shard_from_dataloader', 'FeatureShard',
    'linear_probe_accuracy', 'fit_linear', 'SegmentationProbe',
    'FINAL', 'block_tokens'
]
