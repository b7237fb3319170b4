"""DINO: self-distillation with no labels (Caron et al., ICCV 2021), following the official code.

mmpretrain 1.2.0 has only an unfinished DINO in ``projects/`` (its teacher is never updated);
this one is complete: multi-crop student, EMA teacher on the global crops, centred and sharpened
teacher targets, a weight-normalised last layer frozen during the first epoch, teacher temperature
warm-up (``DINOTeacherTempHook``), gradient clipping and weight-decay schedule by config.
"""
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from mmengine.dist import get_world_size, is_distributed
from mmengine.hooks import Hook
from mmengine.model import BaseModule, is_model_wrapper
from torch import nn

from mmpretrain.models.selfsup.base import BaseSelfSupervisor
from mmpretrain.models.utils import CosineEMA
from mmpretrain.registry import HOOKS, MODELS
from mmpretrain.structures import DataSample


@MODELS.register_module()
class DINOProjector(BaseModule):
    """MLP (GELU) -> bottleneck -> L2 normalisation -> weight-normalised linear layer.

    Args:
        in_channels (int): backbone feature width (the CLS token).
        out_channels (int): prototypes K. Official ViT-S/16: 65536.
        hidden_channels (int): MLP width. Defaults to 2048.
        bottleneck_channels (int): Defaults to 256.
        num_layers (int): MLP layers, bottleneck included. Defaults to 3.
        norm_last_layer (bool): fix the weight-norm gain to 1 (official default). Defaults True.

    Shapes: forward(feats) takes the backbone's tuple (``feats[-1]`` is B x in_channels) and
    returns B x out_channels logits. ``freeze_last_layer`` (set by DINOTeacherTempHook) stops the
    last layer's gradient, as the official code cancels it during the first epoch.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 2048,
                 bottleneck_channels: int = 256, num_layers: int = 3,
                 norm_last_layer: bool = True, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        dims = [in_channels] + [hidden_channels] * (num_layers - 1) + [bottleneck_channels]
        layers = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck_channels, out_channels, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1)
        self.last_layer.parametrizations.weight.original0.requires_grad = not norm_last_layer
        self.freeze_last_layer = False

    def init_weights(self):
        super().init_weights()
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                nn.init.zeros_(m.bias)

    def forward(self, feats) -> torch.Tensor:
        x = self.mlp(feats[-1])
        x = F.normalize(x, dim=-1)
        if self.freeze_last_layer:
            return F.linear(x, self.last_layer.weight.detach())
        return self.last_layer(x)


@MODELS.register_module()
class DINODistillationHead(BaseModule):
    """Cross-entropy between the centred, sharpened teacher and the student, over view pairs.

    Args:
        out_channels (int): K, the width of the logits.
        student_temp (float): Defaults to 0.1.
        teacher_temp (float): the current teacher temperature; DINOTeacherTempHook sets it each
            epoch (warm-up 0.04 -> 0.07). Defaults to 0.04.
        center_momentum (float): Defaults to 0.9.
        loss_weight (float): Defaults to 1.0 (0 turns distillation off, e.g. for ablations).

    Shapes: loss(student, teacher, num_views): student is (V*B) x K (global views first), teacher
    (G*B) x K for the G global views; returns a scalar.
    """

    def __init__(self, out_channels: int, student_temp: float = 0.1, teacher_temp: float = 0.04,
                 center_momentum: float = 0.9, loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.loss_weight = loss_weight
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, out_channels))

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, num_views: int) -> torch.Tensor:
        student_views = (student / self.student_temp).chunk(num_views)
        targets = F.softmax((teacher - self.center) / self.teacher_temp, dim=-1).detach()
        target_views = targets.chunk(teacher.shape[0] // student_views[0].shape[0])
        total, pairs = 0., 0
        for t, target in enumerate(target_views):
            for v, view in enumerate(student_views):
                if v == t:  # a view never predicts itself
                    continue
                total = total + torch.sum(-target * F.log_softmax(view, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(teacher)
        return total / pairs * self.loss_weight

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        batch_center = teacher.sum(dim=0, keepdim=True)
        if is_distributed():
            dist.all_reduce(batch_center)
        batch_center = batch_center / (teacher.shape[0] * get_world_size())
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))


@MODELS.register_module()
class DINO(BaseSelfSupervisor):
    """DINO. The student (``backbone`` + ``neck``) sees every crop; the teacher, an EMA copy,
    sees the global crops; ``head`` computes the distillation loss.

    Args:
        backbone (dict): a ViT (e.g. ``VisionTransformer`` arch ``deit-small``, CLS output).
        neck (dict): the projector, ``DINOProjector``.
        head (dict): ``DINODistillationHead``.
        base_momentum (float): 1 - teacher EMA decay at the start; annealed by cosine to 0
            (decay 1) over training. Official: 0.004 (decay 0.996).
        num_global_views (int): the first views of ``inputs`` are global crops. Defaults to 2.

    Inputs: ``inputs`` is a list of views, B x 3 x H_v x W_v each; same-size views are batched
    into one backbone call, as in the official multi-crop wrapper.
    """

    def __init__(self, backbone: dict, neck: dict, head: dict, base_momentum: float = 0.004,
                 num_global_views: int = 2, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.num_global_views = num_global_views
        self.teacher = CosineEMA(nn.Sequential(self.backbone, self.neck), momentum=base_momentum)

    def _student(self, views: List[torch.Tensor]) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(views):  # consecutive views of one size go through together
            end = start
            while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
                end += 1
            outputs.append(self.neck(self.backbone(torch.cat(views[start:end]))))
            start = end
        return torch.cat(outputs)

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        global_views = inputs[:self.num_global_views]
        with torch.no_grad():
            # EMA of the student as left by the previous optimizer step (the official code
            # updates right after the step: the same sequence of teacher weights).
            self.teacher.update_parameters(nn.Sequential(self.backbone, self.neck))
            teacher = self.teacher(torch.cat(global_views))
        student = self._student(inputs)
        return dict(loss=self.head.loss(student, teacher, num_views=len(inputs)))


@HOOKS.register_module()
class DINOTeacherTempHook(Hook):
    """Teacher temperature: linear warm-up from ``warmup_temp`` to ``temp`` over
    ``warmup_epochs``, then constant; freezes the projector's last layer for the first
    ``freeze_last_layer_epochs`` epochs. Works with and without a DDP wrapper and with RePre.

    An epoch is a pass over the training data in either loop: an ``IterBasedTrainLoop`` (the
    benchmarks' equal-compute baseline, whose schedule is stretched over more iterations)
    counts ``runner.iter // len(runner.train_dataloader)``, where ``runner.epoch`` would stay 0
    and leave the temperature at its warm-up start for the whole run."""

    def __init__(self, warmup_temp: float = 0.04, temp: float = 0.07, warmup_epochs: int = 30,
                 freeze_last_layer_epochs: int = 1):
        self.warmup_temp, self.temp, self.warmup_epochs = warmup_temp, temp, warmup_epochs
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    def temperature(self, epoch: int) -> float:
        if epoch >= self.warmup_epochs:
            return self.temp
        return self.warmup_temp + (self.temp - self.warmup_temp) * epoch / self.warmup_epochs

    def before_train_epoch(self, runner) -> None:
        self.apply(runner, runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self.apply(runner, runner.iter // len(runner.train_dataloader))

    def apply(self, runner, epoch: int) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        model.head.teacher_temp = self.temperature(epoch)
        model.neck.freeze_last_layer = epoch < self.freeze_last_layer_epochs
