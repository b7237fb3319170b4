from .dense_probe import DenseProbe, dense_linear_probe, make_mosaics, patch_token_maps
from .knn import (FEATURE_KINDS, extract_features, features_from_dataloader, knn_accuracy,
                  knn_predict, linear_probe_accuracy)

__all__ = [
    'DenseProbe', 'dense_linear_probe', 'make_mosaics', 'patch_token_maps',
    'FEATURE_KINDS', 'knn_predict', 'knn_accuracy', 'extract_features',
    'features_from_dataloader', 'linear_probe_accuracy'
]
