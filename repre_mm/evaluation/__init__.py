from .knn import (FEATURE_KINDS, extract_features, features_from_dataloader, knn_accuracy,
                  knn_predict, linear_probe_accuracy)

__all__ = [
    'FEATURE_KINDS', 'knn_predict', 'knn_accuracy', 'extract_features',
    'features_from_dataloader', 'linear_probe_accuracy'
]
