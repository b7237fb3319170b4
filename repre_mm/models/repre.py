"""RePre: a contrastive framework plus reconstruction of each view from multi-level features.

Wang et al., "RePre: Improving Self-Supervised Vision Transformer with Reconstructive
Pre-training", IJCAI 2022 (arXiv 2201.06857).
"""
import copy
import functools
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.model import BaseModel
from torch import nn

from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from .level_taps import build_level_tap


def compile_blocks(model: nn.Module, block_type: type, extra: Sequence[nn.Module] = (),
                   options: Optional[dict] = None) -> List[nn.Module]:
    """``torch.compile`` the ``forward`` of every ``block_type`` module of ``model`` (the
    encoder blocks, momentum / teacher copies included) and of the ``extra`` modules, in place:
    hooks on those modules run outside the compiled code, parameter names do not change.
    Returns the compiled modules. (RePre's ``compile_encoder``; the benchmarks compile a
    baseline framework the same way.)"""
    modules = [m for m in model.modules() if type(m) is block_type] + list(extra)
    for module in modules:
        _python_drop_probs(module)
        module.forward = torch.compile(module.forward, **(options or {}))
    return modules


def checkpoint_blocks(model: nn.Module, block_type: type) -> List[nn.Module]:
    """Activation checkpointing of every ``block_type`` module of ``model``, in place: each
    block's ``forward`` runs under ``torch.utils.checkpoint`` (non-reentrant, RNG state kept,
    so dropout draws the same in the recomputation); hooks on the block run outside, once."""
    from torch.utils.checkpoint import checkpoint
    blocks = [m for m in model.modules() if type(m) is block_type]
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return blocks


def _python_drop_probs(module: nn.Module) -> None:
    """mmpretrain's ViT gives each DropPath its rate as a numpy float (``np.linspace``); dynamo
    traces ``drop_prob == 0.`` on it as a tensor comparison and breaks the graph there, five
    times a block. The same value as a Python float compiles into the graph (0 breaks)."""
    for sub in module.modules():
        if isinstance(getattr(sub, 'drop_prob', None), np.generic):
            sub.drop_prob = float(sub.drop_prob)


@MODELS.register_module()
class RePre(BaseModel):
    """Adds a pixel-reconstruction branch to any contrastive framework with a ViT-like backbone.

    The framework (``MoCoV3``, ``BYOL``, ``SimCLR``, ``DINO``, ...) is built from its own config
    and computes its loss exactly as it would alone. While it runs, a tap records every call of
    its online ``backbone`` (input view and the outputs of the ``levels`` blocks), so the encoder
    runs once per view. Each recorded call is decoded back to its input pixels; the mean
    reconstruction loss is added as ``loss_rec``. The momentum / teacher encoder is a copy that
    is never recorded: it gets no decoder and no extra work.

    The framework's modules are registered as RePre's own children, so a checkpoint has the
    framework's key layout (``backbone.*``, ``neck.*``, ``head.*``, ...) plus ``decoder.*`` and
    ``rec_head.*``: mmpretrain's linear-probe and downstream configs load it unchanged with
    ``prefix='backbone.'``.

    Args:
        framework (dict): config of the contrastive algorithm, e.g. mmpretrain's ``MoCoV3``.
        levels (Sequence[int]): zero-based indices of the encoder blocks (ViT) or stages (Swin)
            to fuse, shallow to deep. Defaults to (2, 5, 8, 11).
        decoder (dict): config of the fusion decoder; ``in_channels`` and ``in_strides`` are
            filled in from the backbone. Defaults to ``MultiLevelFusionDecoder``.
        rec_head (dict): config of the reconstruction loss; ``patch_size`` is filled in.
            Defaults to ``RePreReconstructionHead`` (L1, weight 1). A ``loss_weight`` of 0 turns
            the branch off: no decoder forward, ``loss_rec`` is logged as 0.
        reconstruct_local_crops (bool): also reconstruct encoder calls on inputs smaller than
            the largest one (DINO's local crops). Defaults to False.
        compile_encoder (bool | dict): ``torch.compile`` the forward of every encoder block
            (of the online encoder and of its momentum / teacher copies) and of the decoder, at
            the first training step, in place (a dict: ``torch.compile``'s arguments). The level
            taps stay outside the compiled code; parameter names, checkpoints and the momentum
            update are unchanged. Defaults to False. (mmengine's ``compile=True`` compiles the
            whole ``train_step`` instead.)
        with_cp (bool): activation checkpointing of the online encoder's blocks: their
            activations are recomputed in the backward instead of kept (less memory, more
            time). The taps still read each block's output. Defaults to False.
        data_preprocessor (dict, optional): passed to the framework when its config has none.
        init_cfg (dict, optional): mmengine init config.
    """

    def __init__(self,
                 framework: dict,
                 levels: Sequence[int] = (2, 5, 8, 11),
                 decoder: dict = dict(type='MultiLevelFusionDecoder'),
                 rec_head: dict = dict(type='RePreReconstructionHead'),
                 reconstruct_local_crops: bool = False,
                 compile_encoder: Union[bool, dict] = False,
                 with_cp: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        framework = self._build_framework(framework, data_preprocessor)
        super().__init__(data_preprocessor=framework.data_preprocessor, init_cfg=init_cfg)
        for name, module in framework.named_children():
            if name != 'data_preprocessor':
                self.add_module(name, module)
        # Kept out of nn.Module's registry: its modules are already ours (see the docstring).
        self.__dict__['framework'] = framework

        self.tap = build_level_tap(framework.backbone, levels)
        self.levels = self.tap.levels
        decoder = copy.deepcopy(decoder)
        for key, value in (('in_channels', self.tap.channels), ('in_strides', self.tap.strides)):
            given = decoder.setdefault(key, value)
            if list(given) != list(value):
                raise ValueError(
                    f'decoder.{key}={list(given)} does not match the backbone levels {self.levels} '
                    f'({key} {value}); leave it out and RePre fills it in.')
        self.decoder = MODELS.build(decoder)
        rec_head = copy.deepcopy(rec_head)
        rec_head.setdefault('patch_size', self.tap.input_stride)
        self.rec_head = MODELS.build(rec_head)
        self.reconstruct_local_crops = reconstruct_local_crops
        if not isinstance(compile_encoder, (bool, dict)):
            raise TypeError(f'compile_encoder must be a bool or a dict of torch.compile '
                            f'arguments, got {compile_encoder!r}.')
        self.compile_encoder = compile_encoder
        self.compiled_modules: List[nn.Module] = []
        self.with_cp = with_cp
        self.checkpointed_modules: List[nn.Module] = []

    def compile_modules(self) -> List[nn.Module]:
        """Compile, once, the forward of each encoder block and of the decoder (see
        ``compile_encoder``). Blocks are the modules of the tapped blocks' class anywhere in the
        framework, so the momentum / teacher copies are compiled too; each block's instance
        gets its own compiled ``forward`` (hooks on it, the taps, run outside). Called by
        :meth:`loss` at the first step, after the framework made its copies: a module copied
        after this call would keep a forward bound to the original. With ``with_cp`` it also
        checkpoints the online encoder's blocks (:func:`checkpoint_blocks`). Returns the
        compiled modules."""
        if self.compile_encoder and not self.compiled_modules:
            options = self.compile_encoder if isinstance(self.compile_encoder, dict) else {}
            self.compiled_modules = compile_blocks(
                self.framework, type(self.tap.level_modules()[0]), extra=[self.decoder],
                options=options)
        if self.with_cp and not self.checkpointed_modules:  # around the compiled forward
            self.checkpointed_modules = checkpoint_blocks(
                self.backbone, type(self.tap.level_modules()[0]))
        return self.compiled_modules

    @staticmethod
    def _build_framework(cfg: dict, data_preprocessor: Optional[dict]) -> BaseModel:
        if isinstance(cfg, nn.Module):
            framework = cfg
        else:
            cfg = copy.deepcopy(cfg)
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise TypeError(f'`framework` must be a model config dict with a `type`, got '
                                f'{cfg!r}.')
            if MODELS.get(cfg['type']) is None:
                raise KeyError(
                    f'unknown framework type {cfg["type"]!r}: it is not in the mmpretrain model '
                    f'registry. Use a registered self-supervised algorithm (MoCoV3, BYOL, '
                    f'SimCLR, DINO, ...) or import the module that registers yours through '
                    f'`custom_imports`.')
            if data_preprocessor is not None and cfg.get('data_preprocessor') is None:
                cfg['data_preprocessor'] = data_preprocessor
            framework = MODELS.build(cfg)
        if not isinstance(getattr(framework, 'backbone', None), nn.Module):
            raise TypeError(f'framework {type(framework).__name__} has no `backbone` module for '
                            f'RePre to read levels from.')
        if framework._parameters or framework._buffers:
            raise TypeError(
                f'framework {type(framework).__name__} holds parameters or buffers outside its '
                f'submodules ({list(framework._parameters) + list(framework._buffers)}); RePre '
                f'registers only submodules. Move them into a submodule.')
        return framework

    def train(self, mode: bool = True) -> 'RePre':
        super().train(mode)
        self.framework.train(mode)  # the framework's own train() may freeze parts
        return self

    def init_weights(self) -> None:
        # The framework initialises its modules (and e.g. copies them to the momentum encoder)
        # exactly as it would alone; mmengine then skips those modules and inits ours.
        self.framework.init_weights()
        super().init_weights()

    def forward(self, inputs, data_samples: Optional[List[DataSample]] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        return self.framework.forward(inputs, data_samples, mode=mode)

    def extract_feat(self, inputs: torch.Tensor):
        return self.framework.extract_feat(inputs)

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """The framework's losses plus ``loss_rec``.

        Args:
            inputs (list[Tensor]): the views, each B x 3 x H x W (normalised).
            data_samples (list[DataSample]): passed to the framework.
        """
        self.compile_modules()
        if self.rec_head.loss_weight == 0:
            # The branch is off: the framework alone, no decoder work (e.g. to time the wrapper).
            losses = self.framework.loss(inputs, data_samples, **kwargs)
            losses['loss_rec'] = inputs[0].new_zeros(())
            return losses

        with self.tap.record() as calls:
            losses = self.framework.loss(inputs, data_samples, **kwargs)
        if 'loss_rec' in losses:
            raise KeyError('the framework already returns a `loss_rec`; RePre needs that key.')

        if not calls:
            raise RuntimeError(f'{type(self.framework).__name__}.loss never called its backbone: '
                               f'RePre has no encoder levels to reconstruct from.')
        largest = max(call.images.shape[-2:].numel() for call in calls)
        if not self.reconstruct_local_crops:
            calls = [c for c in calls if c.images.shape[-2:].numel() == largest]
        loss_rec = sum(
            self.rec_head.loss(self.decoder(call.levels), call.images) for call in calls)
        losses['loss_rec'] = loss_rec / len(calls)
        return losses
