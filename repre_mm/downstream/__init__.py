"""Classes for transfer with mmdet; imported only where mmdet is installed."""
from .simple_feature_pyramid import SimpleFeaturePyramid

__all__ = ['SimpleFeaturePyramid']
