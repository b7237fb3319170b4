"""Pixel reconstruction loss of RePre: the prediction against the view the encoder saw."""
from typing import Optional

import torch
from mmengine.model import BaseModule

from mmpretrain.registry import MODELS

CRITERIA = ('L1', 'L2', 'SmoothL1')


@MODELS.register_module()
class RePreReconstructionHead(BaseModule):
    """Reconstruction loss between the decoder output and the encoder's own input view.

    Args:
        criterion (str): ``'L1'`` (default), ``'L2'`` or ``'SmoothL1'``.
        loss_weight (float): the loss is multiplied by it (lambda in the spec). Defaults to 1.0.
        norm_pix (bool): normalise the target per patch (zero mean, unit variance over each
            patch's pixels and channels, as MAE does). Defaults to False.
        patch_size (int, optional): the patch for ``norm_pix``; RePre sets it from the encoder.
        smooth_l1_beta (float): the L1/L2 switch-over for ``'SmoothL1'``. Defaults to 1.0.
        init_cfg (dict, optional): mmengine init config.

    Shapes:
        loss(pred, images): both B x 3 x H x W; returns a scalar.
    """

    def __init__(self,
                 criterion: str = 'L1',
                 loss_weight: float = 1.0,
                 norm_pix: bool = False,
                 patch_size: Optional[int] = None,
                 smooth_l1_beta: float = 1.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if criterion not in CRITERIA:
            raise ValueError(f'criterion={criterion!r} is not one of {CRITERIA}.')
        if norm_pix and not patch_size:
            raise ValueError('norm_pix=True needs `patch_size` (RePre fills it in from the '
                             'encoder when the head is built through RePre).')
        if criterion in ('L1', 'L2'):
            # mmpretrain's own loss; SmoothL1 is not one of its criteria.
            self.criterion = MODELS.build(
                dict(type='PixelReconstructionLoss', criterion=criterion))
        else:
            self.criterion = torch.nn.SmoothL1Loss(beta=smooth_l1_beta)
        self.loss_weight = loss_weight
        self.norm_pix = norm_pix
        self.patch_size = patch_size

    def construct_target(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction target: the normalised view, optionally per-patch normalised.

        mmpretrain's MAEPretrainHead normalises per patch too, but its patchify / unpatchify
        assume square images; RePre's views can be non-square, so the target is built here."""
        target = images.float()
        if not self.norm_pix:
            return target
        B, C, H, W = target.shape
        p = self.patch_size
        patches = target.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(B, H // p, W // p, C * p * p)
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        patches = (patches - mean) / (var + 1.e-6)**.5
        patches = patches.reshape(B, H // p, W // p, C, p, p).permute(0, 3, 1, 4, 2, 5)
        return patches.reshape(B, C, H, W)

    def loss(self, pred: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if pred.shape != images.shape:
            raise ValueError(f'the decoder predicted {tuple(pred.shape)} for a view of '
                             f'{tuple(images.shape)}.')
        target = self.construct_target(images.detach())
        # In fp32 even under autocast: an fp16 L1 over 224x224x3 pixels loses precision.
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self.criterion(pred.float(), target) * self.loss_weight
