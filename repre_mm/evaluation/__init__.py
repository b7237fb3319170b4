from .knn import extract_features, knn_accuracy, knn_predict

__all__ = ['knn_predict', 'knn_accuracy', 'extract_features']
