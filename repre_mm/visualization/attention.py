"""CLS-to-patch attention of a ViT's last block, per head (as DINO's ``visualize_attention``)."""
from typing import Optional

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseAveragedModel
from torch import nn

from mmpretrain.models.backbones import VisionTransformer
from .reconstruction import default_scale, tile, to_pixels


def pick_encoder(model: nn.Module, which: str = 'online') -> nn.Module:
    """The online ``backbone``, or the momentum / teacher copy of it (``'momentum'``).

    mmpretrain's MoCo v3 and BYOL and our DINO keep the copy as an EMA of
    ``Sequential(backbone, neck)`` (``momentum_encoder``, ``target_net``, ``teacher``);
    DINO's own tool shows the teacher.
    """
    if which == 'online':
        return model.backbone
    if which != 'momentum':
        raise ValueError(f'encoder must be "online" or "momentum", got {which!r}.')
    for name, module in model.named_children():
        if isinstance(module, BaseAveragedModel) and isinstance(module.module, nn.Sequential) \
                and type(module.module[0]) is type(model.backbone):
            return module.module[0]
    raise ValueError(f'{type(model).__name__} has no momentum / teacher encoder.')


@torch.no_grad()
def cls_attention(backbone: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Attention of the CLS query to each patch in the last block, per head.

    mmpretrain's ``MultiheadAttention`` computes the attention inside
    ``scaled_dot_product_attention`` and never returns it, so a forward hook on the last
    block's ``attn.qkv`` keeps q and k, and the CLS row of softmax(q k^T * scale) is recomputed
    with the scale that block uses.

    The CLS query also attends to itself; DINO's tool drops that column. Here the row is
    renormalised over the patches (it sums to 1 per head), which only rescales each head's map.

    Args:
        backbone (VisionTransformer): an mmpretrain ViT with a CLS token (``MoCoV3ViT``, ...).
        images (Tensor): normalised images, B x 3 x H x W.

    Returns:
        Tensor: B x heads x h x w (h, w: the patch grid), each map summing to 1.
    """
    if not isinstance(backbone, VisionTransformer) or not backbone.with_cls_token:
        raise TypeError(f'CLS attention needs an mmpretrain VisionTransformer with a CLS token; '
                        f'got {type(backbone).__name__}.')
    p = backbone.patch_embed.projection.stride
    if images.shape[-2] % p[0] or images.shape[-1] % p[1]:
        raise ValueError(f'image size {tuple(images.shape[-2:])} is not a multiple of the patch '
                         f'size {tuple(p)}: the maps would not match the patches.')
    attn = backbone.layers[-1].attn
    kept = {}
    handle = attn.qkv.register_forward_hook(lambda m, i, out: kept.__setitem__('qkv', out))
    try:
        backbone(images)
    finally:
        handle.remove()
    qkv = kept['qkv']
    B, N, _ = qkv.shape
    qkv = qkv.reshape(B, N, 3, attn.num_heads, attn.head_dims).permute(2, 0, 3, 1, 4)
    q, k = qkv[0].float(), qkv[1].float()  # B x heads x N x d
    # With `qk_scale` set, mmpretrain 1.2 divides by head_dims**-0.5 (its pyimpl); otherwise
    # torch's SDPA multiplies by head_dims**-0.5. Mirror whichever the block runs.
    given = getattr(attn.scaled_dot_product_attention, 'keywords', {}).get('scale')
    logits = q[:, :, :1] @ k.transpose(-2, -1)  # B x heads x 1 x N
    logits = logits / given if given else logits * attn.head_dims**-0.5
    cls_row = logits.softmax(dim=-1)[:, :, 0, backbone.num_extra_tokens:]
    cls_row = cls_row / cls_row.sum(dim=-1, keepdim=True)
    h, w = images.shape[-2] // p[0], images.shape[-1] // p[1]
    return cls_row.reshape(B, attn.num_heads, h, w)


def colourise(maps: np.ndarray) -> np.ndarray:
    """N x H x W maps -> N x H x W x 3 RGB uint8 (viridis), each map min-max scaled on its own
    (heads differ in peakiness; a shared scale would leave the flat ones black)."""
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    scaled = ((maps - low) / np.maximum(high - low, 1e-12) * 255).round().astype(np.uint8)
    return np.stack([
        cv2.applyColorMap(m, cv2.COLORMAP_VIRIDIS)[..., ::-1] for m in scaled
    ])


@torch.no_grad()
def attention_grid(model: nn.Module, images: torch.Tensor, encoder: str = 'online',
                   scale: Optional[int] = None) -> np.ndarray:
    """One row per image: the input, then each head's CLS attention upsampled to the image
    (nearest: one block per patch, as DINO shows it).

    Args:
        model: a pre-training model (RePre or baseline) with a ViT ``backbone``.
        images (Tensor): normalised images, B x 3 x H x W.
        encoder (str): ``'online'`` or ``'momentum'`` (see :func:`pick_encoder`).
        scale (int, optional): upscaling of the grid; defaults to :func:`default_scale`.

    Returns:
        ndarray: RGB uint8, B*H x (1 + heads)*W, times ``scale``.
    """
    maps = cls_attention(pick_encoder(model, encoder), images)  # B x heads x h x w
    H, W = images.shape[-2:]
    maps = F.interpolate(maps, size=(H, W), mode='nearest').cpu().numpy()
    original = to_pixels(model, images.float()).cpu().numpy()
    rows = [[original[i]] + list(colourise(maps[i])) for i in range(len(images))]
    if scale is None:
        scale = default_scale(max(H, W))
    return tile(rows, scale)
