from .fashion_mnist import CLASSES, load_fashion_mnist, write_image_folder

__all__ = ['CLASSES', 'load_fashion_mnist', 'write_image_folder']
