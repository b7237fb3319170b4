"""Classes for transfer with mmdet and mmseg; each imported only where its library is installed
(``import mmseg`` needs mmcv, ``import mmdet`` too)."""
__all__ = []

try:
    import mmdet  # noqa: F401
except ImportError:
    pass
else:
    from .box_mask_metric import BoxMaskCocoMetric  # noqa: F401
    from .simple_feature_pyramid import SimpleFeaturePyramid  # noqa: F401
    __all__ += ['BoxMaskCocoMetric', 'SimpleFeaturePyramid']

try:
    import mmseg  # noqa: F401
except ImportError:
    pass
else:
    from .seg_folder import SegFolderDataset  # noqa: F401
    from .seg_metric import PerClassIoUMetric  # noqa: F401
    __all__ += ['SegFolderDataset', 'PerClassIoUMetric']
