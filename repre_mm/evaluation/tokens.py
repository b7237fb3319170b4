"""The tokens of one block of a frozen ViT: what every probe and feature reader here reads.

    with block_tokens(backbone, 'final') as tokens:
        backbone(images)
    tokens[0]  # B x (extra + hw) x C, after the final norm

A forward hook on the block, not ``out_indices``: the backbone keeps the ``out_type`` and
``out_indices`` it was built with (a pre-training config's), and any block can be read from the
same forward pass.
"""
from contextlib import contextmanager
from typing import Iterator, List, Union

import torch
from torch import nn

from mmpretrain.models.backbones import VisionTransformer

FINAL = 'final'  # the block argument that selects the tokens after the final norm


def check_block(backbone: nn.Module, block: Union[int, str]) -> None:
    """Raises unless ``backbone`` is a ViT and ``block`` one of its blocks or ``'final'``."""
    if not isinstance(backbone, VisionTransformer):
        raise TypeError(f'block tokens are those of a VisionTransformer; got a '
                        f'{type(backbone).__name__} backbone.')
    depth = len(backbone.layers)
    if block != FINAL and not (isinstance(block, int) and 0 <= block < depth):
        raise ValueError(f'block={block!r} is out of range: the backbone has {depth} blocks '
                         f'(0..{depth - 1}), or use {FINAL!r} for the final norm.')


@contextmanager
def block_tokens(backbone: VisionTransformer,
                 block: Union[int, str] = FINAL) -> Iterator[List[torch.Tensor]]:
    """Records the tokens of ``backbone.layers[block]`` at each backbone call in the context.

    Args:
        backbone (VisionTransformer): an mmpretrain ViT (or subclass, e.g. ``MoCoV3ViT``).
        block (int | str): a zero-based block index (its output, before any norm), or
            ``'final'``: the last block's output after the final norm (``ln1``), the tokens
            mmpretrain's ViT returns. Defaults to ``'final'``.

    Yields:
        list[Tensor]: one B x (num_extra_tokens + h * w) x C tensor per backbone call; the CLS
        token (when the backbone has one) comes first.
    """
    check_block(backbone, block)
    out: List[torch.Tensor] = []
    final = block == FINAL
    layer = backbone.layers[-1 if final else block]

    def hook(module, args, output):
        out.append(backbone.ln1(output) if final and backbone.final_norm else output)

    handle = layer.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


def patch_maps(backbone: VisionTransformer, tokens: torch.Tensor, height: int) -> torch.Tensor:
    """The patch tokens of ``tokens`` (B x (extra + h * w) x C) as B x C x h x w maps.

    Args:
        backbone (VisionTransformer): the ViT that gave ``tokens`` (its extra tokens are
            dropped, its patch stride gives h).
        tokens (Tensor): B x (num_extra_tokens + h * w) x C, e.g. from :func:`block_tokens`.
        height (int): the height of the images the tokens are of, in pixels.

    Returns:
        Tensor: B x C x h x w, h = height // patch stride.
    """
    patches = tokens[:, backbone.num_extra_tokens:]
    h = height // backbone.patch_embed.projection.stride[0]
    return patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, -1)
