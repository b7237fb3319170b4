from .fashion_mnist import CLASSES, load_fashion_mnist, write_image_folder
from .image_folder import (FolderInfo, inspect_image_folder, list_image_folder,
                           load_image_folder, read_rgb)
from .seg_folder import (SegFolderInfo, check_seg_folder, list_seg_pairs, read_classes,
                         read_palette)
from .transforms import LoadImageOrSkip

__all__ = [
    'CLASSES', 'load_fashion_mnist', 'write_image_folder', 'LoadImageOrSkip', 'FolderInfo',
    'inspect_image_folder', 'list_image_folder', 'load_image_folder', 'read_rgb',
    'SegFolderInfo', 'check_seg_folder', 'list_seg_pairs', 'read_classes', 'read_palette'
]
