from .attention import attention_grid, cls_attention, pick_encoder
from .reconstruction import (normalise, reconstruct, reconstruction_grid, require_repre, tile,
                             to_pixels)
from .utils import input_size, model_and_size, read_image, visualiser_parser

__all__ = [
    'reconstruct', 'to_pixels', 'normalise', 'reconstruction_grid', 'require_repre', 'tile',
    'cls_attention', 'attention_grid', 'pick_encoder', 'input_size', 'read_image',
    'visualiser_parser', 'model_and_size'
]
