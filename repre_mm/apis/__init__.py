"""Inference helpers for a trained (or untrained) RePre / baseline encoder."""
from .inference import extract_features, init_model, load_images

__all__ = ['init_model', 'extract_features', 'load_images']
