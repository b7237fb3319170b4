from .dense_probe import DenseProbe, dense_linear_probe, make_mosaics, patch_token_maps
from .knn import (FEATURE_KINDS, backbone_features, features_from_dataloader, knn_accuracy,
                  knn_predict)
from .linear import fit_linear, linear_probe_accuracy
from .seg_probe import SegmentationProbe
from .tokens import FINAL, block_tokens

__all__ = [
    'DenseProbe', 'dense_linear_probe', 'make_mosaics', 'patch_token_maps',
    'FEATURE_KINDS', 'knn_predict', 'knn_accuracy', 'backbone_features',
    'features_from_dataloader', 'linear_probe_accuracy', 'fit_linear', 'SegmentationProbe',
    'FINAL', 'block_tokens'
]
