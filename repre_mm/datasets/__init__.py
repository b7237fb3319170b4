from .fashion_mnist import CLASSES, load_fashion_mnist, write_image_folder
from .transforms import LoadImageOrSkip

__all__ = ['CLASSES', 'load_fashion_mnist', 'write_image_folder', 'LoadImageOrSkip']
