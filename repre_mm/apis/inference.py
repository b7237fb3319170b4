"""Build a pre-training model from its config and read features of any images.

    from repre_mm.apis import extract_features
    config = 'configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'
    feats = extract_features(config, 'work_dirs/.../epoch_300.pth', ['a.jpg', 'b.png'],
                             device='cuda')
    feats['cls']           # N x C   CLS token after the final norm (the k-NN / linear feature)
    feats['patch_mean']    # N x C   mean patch token after the final norm
    feats['patch']         # N x C x h x w   patch tokens after the final norm

mmpretrain's ``get_model`` / ``FeatureExtractor`` need a ``test_dataloader``, which
pre-training configs do not have; these helpers need only the model part of the config.
"""
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from mmpretrain.registry import MODELS
from ..datasets.image_folder import read_rgb
from ..evaluation.knn import backbone_features
from ..utils.checkpoint import load_strict, load_weights
from ..utils.resources import shipped_config

ImageLike = Union[str, np.ndarray]


def init_model(config: Union[str, Config], checkpoint: Optional[str] = None,
               device: Union[str, torch.device] = 'cpu', cfg_options: Optional[dict] = None,
               bare_backbone: bool = True) -> nn.Module:
    """The model of a pre-training config, in eval mode on ``device``.

    Args:
        config (str | Config): a RePre or baseline config: a file, a shipped config by its
            ``repre_mm::`` name (``'repre_mm::repre/repre_mocov3_...py'``) or its
            ``configs/...`` path, from any folder.
        checkpoint (str, optional): a checkpoint of that config (every key must match), or a bare
            backbone (tools/model_converters/extract_backbone.py). None: the initial weights.
        device: where the model runs.
        cfg_options (dict, optional): overrides merged into the config.
        bare_backbone (bool): whether a bare-backbone checkpoint is accepted. The visualisers
            pass False: a decoder left at its initial weights would draw plausible but wrong
            pictures.
    """
    cfg = Config.fromfile(shipped_config(config)) if isinstance(config, str) else config.copy()
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(cfg.model)
    model.init_weights()
    if checkpoint is not None:
        weights = load_weights(checkpoint)
        if not bare_backbone or any(k.startswith('backbone.') for k in weights):
            load_strict(model, weights, source=checkpoint)
        else:
            load_strict(model.backbone, weights, source=checkpoint)
    return model.to(device).eval()


def load_images(images: Sequence[ImageLike], size: int) -> torch.Tensor:
    """Paths or H x W x 3 RGB uint8 arrays -> N x 3 x size x size float (0-255, RGB)."""
    arrays: List[np.ndarray] = []
    for image in images:
        if isinstance(image, str):
            array = read_rgb(image, size)
        else:
            array = np.asarray(image)
            if array.ndim == 2:
                array = np.repeat(array[..., None], 3, axis=2)
            if array.shape[:2] != (size, size):
                import cv2
                array = cv2.resize(array, (size, size), interpolation=cv2.INTER_AREA)
        arrays.append(array)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()


@torch.no_grad()
def extract_features(model: Union[nn.Module, str], checkpoint: Optional[str] = None,
                     images: Sequence[ImageLike] = (), device: Union[str, torch.device] = 'cpu',
                     batch_size: int = 64) -> Dict[str, torch.Tensor]:
    """Final-norm features of a ViT encoder for ``images`` (paths or RGB arrays).

    Images are resized to the backbone's ``img_size`` and normalised with the config's
    ``data_preprocessor`` mean / std, as in training. The features are those of the k-NN
    tool (:func:`repre_mm.evaluation.backbone_features`).

    Args:
        model (nn.Module | str): a model from :func:`init_model`, or a config path (then
            ``checkpoint`` and ``device`` build it with :func:`init_model`).
        checkpoint (str, optional): with a config path: a checkpoint of that config or a bare
            backbone; None: the initial weights.
        images (Sequence[str | np.ndarray]): image paths or H x W (x 3) RGB uint8 arrays.
        device (str | torch.device): with a config path: where the model runs.
        batch_size (int): images per forward pass. Defaults to 64.

    Returns:
        dict(cls=N x C, patch_mean=N x C, patch=N x C x h x w), float32 on the CPU.
    """
    if isinstance(model, str):
        model = init_model(model, checkpoint, device)
    backbone = model.backbone
    stride = backbone.patch_embed.projection.stride[0]
    size = backbone.patch_resolution[0] * stride
    preprocessor = model.data_preprocessor
    device = next(model.parameters()).device
    pixels = load_images(images, size)
    batches = ((chunk.to(device) - preprocessor.mean) / preprocessor.std
               for chunk in pixels.split(batch_size))
    # the k-NN tool's own feature code, so that both read the same tokens; the patch maps of
    # many images would not fit a GPU, hence on the CPU batch by batch
    return backbone_features(backbone, batches, ('cls', 'patch_mean', 'patch'), out_device='cpu')
