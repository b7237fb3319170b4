"""The light convolutional decoder of RePre: fuses several encoder levels and predicts pixels."""
import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn

from mmpretrain.registry import MODELS

UPSAMPLE_KINDS = ('pixel_shuffle', 'deconv', 'bilinear')


def fusion_points(strides: Sequence[int], num_points: int) -> List[int]:
    """Where each level except the deepest joins the decoder (0 = the deepest level's grid).

    Point ``p`` has ``2**p`` times the resolution of the deepest level.
    - Levels of different strides (Swin) join where the resolution matches their own.
    - Levels of one stride (ViT) are spread over the points, deep levels at low resolution and
      the shallowest at the highest, e.g. 4 levels with 4 points -> the three shallower ones at
      points 3, 2, 1 (in input order: shallow first).
    """
    others = list(strides[:-1])
    deepest = strides[-1]
    if len(set(strides)) > 1:
        return [int(round(math.log2(deepest / s))) for s in others]
    n = len(others)
    # j counts from the deepest of the others (j = 0) to the shallowest (j = n - 1).
    points = [min(num_points - 1, math.ceil((j + 1) * (num_points - 1) / n)) for j in range(n)]
    return points[::-1]


@MODELS.register_module()
class MultiLevelFusionDecoder(BaseModule):
    """U-Net-style decoder from several encoder levels (shallow to deep) to an image.

    Data flow for a ViT-S/16 at 224x224 with the 4 default levels (stride 16 each, 14x14 maps):

        deepest level -> norm -> 1x1 -> widths[0] @14
        point 0 @14: conv -> upsample x2 -> widths[1] @28
        point 1 @28: + level 8 (norm, 1x1, bilinear to 28) -> conv -> upsample -> widths[2] @56
        point 2 @56: + level 5 -> conv -> upsample -> widths[3] @112
        point 3 @112: + level 2 -> conv -> upsample -> 3 channels @224 (the prediction)

    There is one fusion point per x2 upsampling, ``log2(max stride)`` in all. Convolutions run at
    the low resolution of each point; the last upsampling predicts the pixels directly, so with
    ``upsample='pixel_shuffle'`` (sub-pixel convolution) no convolution runs at full resolution.

    Args:
        in_channels (Sequence[int]): channels of each level, shallow to deep.
        in_strides (Sequence[int]): stride (input pixels per map pixel) of each level; every
            stride must be a power of two. ViT: the patch size for every level.
        widths (Sequence[int], optional): channels at each fusion point, low to high resolution;
            one per x2 upsampling. Defaults to ``base_width`` halved at every point, at least 16.
        base_width (int): width at the deepest point when ``widths`` is None. Defaults to 128.
        out_channels (int): predicted channels. Defaults to 3.
        upsample (str): ``'pixel_shuffle'`` (3x3 conv to 4x channels + PixelShuffle),
            ``'deconv'`` (2x2 transposed conv, stride 2) or ``'bilinear'`` (x2 bilinear + 3x3
            conv). Defaults to ``'pixel_shuffle'``.
        convs_per_point (int): extra 3x3 convs after the fusion at each point. Defaults to 1.
        level_norm (bool): LayerNorm each level over channels first. Intermediate ViT outputs are
            not normalised, and their scale grows with depth. Defaults to True.
        norm_cfg (dict, optional): norm of the decoder convs. Defaults to None.
        act_cfg (dict): activation of the decoder convs. Defaults to ReLU.
        init_cfg (dict, optional): mmengine init config.

    Shapes:
        forward(levels): levels[l] is B x in_channels[l] x H/in_strides[l] x W/in_strides[l];
        returns B x out_channels x H x W.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 in_strides: Sequence[int],
                 widths: Optional[Sequence[int]] = None,
                 base_width: int = 128,
                 out_channels: int = 3,
                 upsample: str = 'pixel_shuffle',
                 convs_per_point: int = 1,
                 level_norm: bool = True,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        in_channels, in_strides = list(in_channels), list(in_strides)
        if len(in_channels) != len(in_strides) or not in_channels:
            raise ValueError(f'the decoder needs one channel count and one stride per level, got '
                             f'in_channels={in_channels} and in_strides={in_strides}.')
        for s in in_strides:
            if s < 2 or s & (s - 1):
                raise ValueError(f'every level stride must be a power of two >= 2 (a ViT patch '
                                 f'size of 2, 4, 8, 16, 32...), got {in_strides}.')
        if in_strides != sorted(in_strides):
            raise ValueError(f'levels must go shallow to deep (non-decreasing strides), got '
                             f'{in_strides}.')
        if upsample not in UPSAMPLE_KINDS:
            raise ValueError(f'upsample={upsample!r} is not one of {UPSAMPLE_KINDS}.')
        num_points = int(math.log2(in_strides[-1]))
        if widths is None:
            widths = [max(16, base_width >> p) for p in range(num_points)]
        widths = list(widths)
        if len(widths) != num_points:
            raise ValueError(
                f'`widths` needs one entry per x2 upsampling of the deepest level (stride '
                f'{in_strides[-1]} -> {num_points} entries), got {len(widths)}: {widths}.')
        self.in_strides = in_strides
        self.points = fusion_points(in_strides, num_points)

        self.level_norms = nn.ModuleList(
            nn.LayerNorm(c) if level_norm else nn.Identity() for c in in_channels)
        # 1x1 projections at the level's own resolution; the deepest one starts the decoder.
        self.laterals = nn.ModuleList(
            nn.Conv2d(c, widths[p], 1)
            for c, p in zip(in_channels, self.points + [0]))
        self.point_convs = nn.ModuleList(
            nn.Sequential(*[
                ConvModule(w, w, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg)
                for _ in range(convs_per_point)
            ]) for w in widths)
        outs = widths[1:] + [out_channels]
        self.upsamples = nn.ModuleList(
            self._upsample(w_in, w_out, upsample, last=(i == num_points - 1),
                           norm_cfg=norm_cfg, act_cfg=act_cfg)
            for i, (w_in, w_out) in enumerate(zip(widths, outs)))

    @staticmethod
    def _upsample(c_in, c_out, kind, last, norm_cfg, act_cfg):
        # The last upsampling is the prediction: no norm, no activation.
        norm_cfg = None if last else norm_cfg
        act_cfg = None if last else act_cfg
        if kind == 'pixel_shuffle':
            return nn.Sequential(
                ConvModule(c_in, 4 * c_out, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg),
                nn.PixelShuffle(2))
        if kind == 'deconv':
            return ConvModule(c_in, c_out, 2, stride=2, conv_cfg=dict(type='deconv'),
                              norm_cfg=norm_cfg, act_cfg=act_cfg)
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            ConvModule(c_in, c_out, 3, padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg))

    def _lateral(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.level_norms[index], nn.Identity):
            x = self.level_norms[index](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.laterals[index](x)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(levels) != len(self.laterals):
            raise ValueError(f'the decoder was built for {len(self.laterals)} levels, got '
                             f'{len(levels)}.')
        x = self._lateral(-1, levels[-1])  # B x widths[0] x h x w
        for p, (point_conv, upsample) in enumerate(zip(self.point_convs, self.upsamples)):
            for index, point in enumerate(self.points):
                if point == p:
                    lateral = self._lateral(index, levels[index])
                    if lateral.shape[-2:] != x.shape[-2:]:
                        lateral = F.interpolate(
                            lateral, size=x.shape[-2:], mode='bilinear', align_corners=False)
                    x = x + lateral
            x = upsample(point_conv(x))
        return x
