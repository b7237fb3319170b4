"""Read the multi-level features of an encoder from the forward pass the framework already runs.

RePre must not run the online encoder a second time: the contrastive framework calls
``backbone(view)`` as it always does, and a tap records, for each such call, the input images and
the outputs of the chosen blocks (``levels``). The momentum / teacher encoder is a separate copy
of the modules, so its calls are never recorded.
"""
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, List, Sequence, Tuple

import torch
from torch import nn

from mmpretrain.models.backbones import SwinTransformer, VisionTransformer


@dataclass
class EncoderCall:
    """One forward call of the online encoder.

    Attributes:
        images (Tensor): the input of the call, B x 3 x H x W (normalised pixels).
        levels (list[Tensor]): the kept block outputs, shallow to deep, each B x C_l x h_l x w_l.
    """
    images: torch.Tensor
    levels: List[torch.Tensor] = field(default_factory=list)


def _normalise_levels(levels: Sequence[int], depth: int, what: str) -> Tuple[int, ...]:
    if isinstance(levels, int) or len(levels) == 0:
        raise ValueError(f'`levels` must be a non-empty sequence of {what} indices, '
                         f'got {levels!r}.')
    out = []
    for index in levels:
        if not isinstance(index, int) or not -depth <= index < depth:
            raise ValueError(
                f'level index {index!r} is out of range for a backbone with {depth} {what}s: '
                f'use zero-based indices in [0, {depth - 1}] (or negative ones from the end), '
                f'e.g. levels=(2, 5, 8, 11) for 12 blocks.')
        out.append(index % depth)
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f'`levels` must be distinct and ordered shallow to deep, '
                         f'got {tuple(levels)} (normalised: {tuple(out)}).')
    return tuple(out)


class LevelTap:
    """Records encoder calls. Subclasses say which modules are levels and how to read them.

    Attributes:
        levels (tuple[int]): zero-based level indices, shallow to deep.
        channels (list[int]): channels of each level's feature map.
        strides (list[int]): input pixels per feature-map pixel, for each level.
    """
    levels: Tuple[int, ...]
    channels: List[int]
    strides: List[int]

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone

    def level_modules(self) -> List[nn.Module]:
        raise NotImplementedError

    def to_feature_map(self, output, images: torch.Tensor, level: int) -> torch.Tensor:
        """Turn a level module's raw output into B x C x h x w."""
        raise NotImplementedError

    @property
    def input_stride(self) -> int:
        """Input height and width must be multiples of this."""
        return max(self.strides)

    def check_input(self, images: torch.Tensor) -> None:
        H, W = images.shape[-2:]
        s = self.input_stride
        if H % s or W % s:
            raise ValueError(
                f'input size {H}x{W} is not divisible by the encoder stride {s} (the patch size '
                f'for a ViT): RePre reconstructs whole patches. Crop or resize the views to a '
                f'multiple of {s}, e.g. {H // s * s}x{W // s * s}.')

    @contextmanager
    def record(self) -> Iterator[List[EncoderCall]]:
        """Within the block, every call of the backbone appends one :class:`EncoderCall`."""
        calls: List[EncoderCall] = []

        def start_call(module, args):
            images = args[0]
            self.check_input(images)
            calls.append(EncoderCall(images=images))

        def keep_level(level):
            def hook(module, args, output):
                call = calls[-1]
                call.levels.append(self.to_feature_map(output, call.images, level))
            return hook

        handles = [self.backbone.register_forward_pre_hook(start_call)]
        for level, module in zip(self.levels, self.level_modules()):
            handles.append(module.register_forward_hook(keep_level(level)))
        try:
            yield calls
        finally:
            for handle in handles:
                handle.remove()


class ViTLevelTap(LevelTap):
    """Levels are transformer blocks of an mmpretrain ``VisionTransformer`` (or subclass).

    A block outputs B x (extra + h*w) x C tokens; the CLS / register tokens are dropped. Block
    outputs are taken before the backbone's final norm (even for the last block), so the decoder
    normalises every level itself.
    """

    def __init__(self, backbone: VisionTransformer, levels: Sequence[int]):
        super().__init__(backbone)
        depth = len(backbone.layers)
        self.levels = _normalise_levels(levels, depth, 'transformer block')
        patch = backbone.patch_embed.projection.stride
        if patch[0] != patch[1]:
            raise ValueError(f'RePre needs square patches, got stride {patch}.')
        self.patch_size = patch[0]
        self.channels = [backbone.embed_dims] * len(self.levels)
        self.strides = [self.patch_size] * len(self.levels)
        img_size = getattr(backbone.patch_embed, 'init_input_size', None)
        if img_size is not None:  # the configured size, checked before any data is loaded
            self.check_input(torch.empty(0, 3, *img_size))

    def level_modules(self):
        return [self.backbone.layers[i] for i in self.levels]

    def to_feature_map(self, output, images, level):
        B, _, H, W = images.shape
        h, w = H // self.patch_size, W // self.patch_size
        patch_tokens = output[:, self.backbone.num_extra_tokens:]  # B x hw x C
        return patch_tokens.transpose(1, 2).reshape(B, -1, h, w)


class SwinLevelTap(LevelTap):
    """Levels are the stages of an mmpretrain ``SwinTransformer`` (strides 4, 8, 16, 32).

    A stage outputs ``(tokens, (h, w))`` before its patch merging.
    """

    def __init__(self, backbone: SwinTransformer, levels: Sequence[int]):
        super().__init__(backbone)
        if backbone.out_after_downsample:
            raise ValueError('RePre reads Swin stages before patch merging: set '
                             '`out_after_downsample=False` in the backbone config.')
        self.levels = _normalise_levels(levels, len(backbone.stages), 'stage')
        patch = backbone.patch_embed.projection.stride[0]
        self.channels = [backbone.num_features[i] for i in self.levels]
        self.strides = [patch * 2**i for i in self.levels]
        # Swin pads windows internally; patch merging needs even sizes down to the last stage.
        self._input_stride = patch * 2**(len(backbone.stages) - 1)

    @property
    def input_stride(self):
        return self._input_stride

    def level_modules(self):
        return [self.backbone.stages[i] for i in self.levels]

    def to_feature_map(self, output, images, level):
        tokens, (h, w) = output
        B = tokens.shape[0]
        return tokens.transpose(1, 2).reshape(B, -1, h, w)


def build_level_tap(backbone: nn.Module, levels: Sequence[int]) -> LevelTap:
    """Pick the tap for a backbone; unsupported backbones get a clear error."""
    if isinstance(backbone, VisionTransformer):
        return ViTLevelTap(backbone, levels)
    if isinstance(backbone, SwinTransformer):
        return SwinLevelTap(backbone, levels)
    raise TypeError(
        f'RePre needs a ViT-like backbone whose intermediate levels it can read: an mmpretrain '
        f'VisionTransformer (MoCoV3ViT, ...) or SwinTransformer. Got {type(backbone).__name__}; '
        f'for another backbone, subclass repre_mm.models.level_taps.LevelTap.')
