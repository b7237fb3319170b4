from .fashion_mnist import CLASSES, load_fashion_mnist, write_image_folder
from .image_folder import (FolderInfo, inspect_image_folder, list_image_folder,
                           load_image_folder, read_rgb)
from .transforms import LoadImageOrSkip

__all__ = [
    'CLASSES', 'load_fashion_mnist', 'write_image_folder', 'LoadImageOrSkip', 'FolderInfo',
    'inspect_image_folder', 'list_image_folder', 'load_image_folder', 'read_rgb'
]
