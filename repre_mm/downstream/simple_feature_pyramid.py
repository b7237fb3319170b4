"""ViTDet's simple feature pyramid: strides 4-32 (and 64) from a plain ViT's single stride-16 map.

Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022.
mmdet 3.3's core package has no such neck (its ``projects/ViTDet`` is not installed).
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmdet.registry import MODELS


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a B x C x H x W map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Builds a pyramid from the last feature map of a plain ViT.

    Scale 4: two stride-2 transposed convs (LN, GELU between); 2: one; 1: identity; 0.5: max
    pool. Each level then gets a 1x1 conv and a 3x3 conv to ``out_channels``, with LayerNorm. With
    ``num_outs`` one more than the scales, a stride-2 max pool of the coarsest level is appended
    (the P6 that mmdet's RPN expects).

    Args:
        in_channels (int): channels of the ViT map (384 for ViT-S, 768 for ViT-B).
        out_channels (int): channels of every pyramid level. Defaults to 256.
        scale_factors (Sequence[float]): Defaults to (4, 2, 1, 0.5): strides 4, 8, 16, 32 for a
            stride-16 input.
        num_outs (int): levels returned. Defaults to 5.

    Shapes: forward(inputs) takes the backbone's tuple (``inputs[-1]`` is B x C x H/16 x W/16)
    and returns ``num_outs`` contiguous maps, B x out_channels x H/s x W/s for s = 4, 8, 16, 32
    (, 64).
    """

    def __init__(self, in_channels: int, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), num_outs: int = 5,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if num_outs not in (len(scale_factors), len(scale_factors) + 1):
            raise ValueError(f'num_outs={num_outs} must be {len(scale_factors)} or '
                             f'{len(scale_factors) + 1} (one extra max-pooled level).')
        self.num_outs = num_outs
        self.stages = nn.ModuleList()
        c = in_channels
        for scale in scale_factors:
            if scale == 4.0:
                layers, dim = [nn.ConvTranspose2d(c, c // 2, 2, 2), LayerNorm2d(c // 2),
                               nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2)], c // 4
            elif scale == 2.0:
                layers, dim = [nn.ConvTranspose2d(c, c // 2, 2, 2)], c // 2
            elif scale == 1.0:
                layers, dim = [], c
            elif scale == 0.5:
                layers, dim = [nn.MaxPool2d(2, 2)], c
            else:
                raise ValueError(f'scale factor {scale} is not one of 4, 2, 1, 0.5.')
            layers += [
                nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                LayerNorm2d(out_channels)
            ]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, inputs: Tuple[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        x = inputs[-1]
        outs = [stage(x) for stage in self.stages]
        if self.num_outs > len(outs):
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        # LayerNorm2d leaves each level channels-last in memory (a permuted view), and mmcv's
        # RoIAlign reads a map's memory as if it were contiguous NCHW: without this the RoI
        # heads get scrambled features (boxes learn a little, masks hardly at all)
        return tuple(out.contiguous() for out in outs)
