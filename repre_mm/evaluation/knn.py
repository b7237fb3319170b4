"""Weighted k-NN classification of frozen features (the DINO protocol).

Features are L2-normalised; each query takes its k most cosine-similar bank samples, and each
neighbour votes for its label with weight exp(similarity / T). Defaults: k=20, T=0.07.
Everything runs on the features' device; under DDP every rank extracts its shard and the shards
are gathered, so the accuracy is the one of a single process.
"""
import sys
from contextlib import nullcontext
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.dataset import DefaultSampler
from mmengine.dist import all_gather, get_rank, get_world_size
from mmengine.utils import ProgressBar
from torch import nn

from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
from .tokens import FINAL, block_tokens, patch_maps

FEATURE_KINDS = ('cls', 'patch_mean')


def default_kinds(backbone: nn.Module) -> Tuple[str, ...]:
    """The k-NN feature kinds a backbone has: a ViT both, a Swin only ``patch_mean`` (no CLS
    token)."""
    return ('patch_mean', ) if isinstance(backbone, SwinTransformer) else FEATURE_KINDS


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07,
                query_chunk: int = 1024, bank_chunk: int = 65536) -> torch.Tensor:
    """Predicted labels for ``queries`` from ``bank``, computed on ``bank``'s device.

    Memory stays at query_chunk x (bank_chunk + k): a bank of ImageNet size never has to be
    compared with all queries at once.

    Args:
        bank (Tensor): N x D features; its device is where everything is computed (a GPU bank
            is scored on that GPU).
        bank_labels (Tensor): N labels (moved to ``bank``'s device).
        queries (Tensor): Q x D features (moved to ``bank``'s device).
        num_classes (int): number of classes of the labels.
        k (int): neighbours. Defaults to 20.
        temperature (float): vote weight exp(similarity / T). Defaults to 0.07.
        query_chunk (int): queries compared at once. Defaults to 1024.
        bank_chunk (int): bank rows compared at once. Defaults to 65536.

    Returns:
        Tensor: Q predicted labels, on ``bank``'s device.
    """
    device = bank.device
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.to(device).float(), dim=1)
    bank_labels = bank_labels.to(device)
    k = min(k, bank.shape[0])
    predictions = []
    for q in queries.split(query_chunk):
        top_sim = torch.full((q.shape[0], 0), float('-inf'), device=device)
        top_idx = torch.zeros((q.shape[0], 0), dtype=torch.long, device=device)
        for start in range(0, bank.shape[0], bank_chunk):
            sim = q @ bank[start:start + bank_chunk].T
            sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
            top_sim, order = torch.cat([top_sim, sim], 1).topk(
                min(k, top_sim.shape[1] + sim.shape[1]), dim=1)
            top_idx = torch.cat([top_idx, idx + start], 1).gather(1, order)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes, device=device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(bank, bank_labels, queries, query_labels, k=20, temperature=0.07,
                 num_classes=None) -> float:
    """Top-1 accuracy in percent (computed on ``bank``'s device)."""
    if num_classes is None:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return (pred == query_labels.to(pred.device)).float().mean().item() * 100


def _vit_features(backbone: VisionTransformer, images: torch.Tensor,
                  kinds: Sequence[str]) -> Dict[str, torch.Tensor]:
    with block_tokens(backbone, FINAL) as tokens:
        backbone(images)
    x = tokens[0]  # B x (extra + hw) x C
    feats = {}
    if 'cls' in kinds:
        feats['cls'] = x[:, 0]
    if 'patch_mean' in kinds:
        feats['patch_mean'] = x[:, backbone.num_extra_tokens:].mean(1)
    if 'patch' in kinds:
        feats['patch'] = patch_maps(backbone, x, images.shape[2])
    return feats


def _swin_features(backbone: SwinTransformer, images: torch.Tensor,
                   kinds: Sequence[str]) -> Dict[str, torch.Tensor]:
    # mmpretrain's Swin normalises each returned stage (norm{i}); the deepest returned stage,
    # average-pooled, is what MoCo v3's Swin neck (with_avg_pool) and a linear probe read.
    deepest = backbone(images)[-1]  # B x C x h x w
    return {'patch_mean': deepest.mean(dim=(2, 3))}


@torch.no_grad()
def backbone_features(backbone: nn.Module, batches: Iterable,
                      kinds: Optional[Sequence[str]] = None,
                      amp_dtype: Optional[torch.dtype] = None,
                      out_device: Optional[Union[str, torch.device]] = None
                      ) -> Dict[str, torch.Tensor]:
    """Features of a ViT or Swin for every image of ``batches`` (each B x 3 x H x W, normalised).

    ViT: ``cls`` is the CLS token after the final norm, ``patch_mean`` the mean of the patch
    tokens after the final norm, ``patch`` those patch tokens as maps. Swin (no CLS token):
    ``patch_mean`` is the deepest returned stage after its norm, average-pooled.

    Args:
        backbone (nn.Module): a ``VisionTransformer`` (or subclass) or ``SwinTransformer``;
            run in eval mode, then put back in the mode it was in.
        batches (Iterable[Tensor]): the images, batch by batch, on the backbone's device.
        kinds (Sequence[str], optional): feature kinds; defaults to the k-NN ones the backbone
            has (:func:`default_kinds`). A ViT also has ``patch``.
        amp_dtype (torch.dtype, optional): autocast dtype for the forward pass
            (``torch.float16`` / ``torch.bfloat16``); the features are returned in fp32.
        out_device (str | torch.device, optional): where each batch's features are kept, e.g.
            ``'cpu'`` for many patch maps; default: the images' device.

    Returns:
        dict[str, Tensor]: {kind: N x C} (``patch``: N x C x h x w, h = H // patch).
    """
    if not isinstance(backbone, (VisionTransformer, SwinTransformer)):
        raise TypeError(f'features need a VisionTransformer or SwinTransformer backbone, '
                        f'got {type(backbone).__name__}.')
    kinds = default_kinds(backbone) if kinds is None else tuple(kinds)
    available = default_kinds(backbone) + (
        ('patch', ) if isinstance(backbone, VisionTransformer) else ())
    for kind in kinds:
        if kind not in available:
            raise ValueError(f'feature kind {kind!r} is not one of {available} for a '
                             f'{type(backbone).__name__} backbone.')
    read = _swin_features if isinstance(backbone, SwinTransformer) else _vit_features
    was_training = backbone.training
    backbone.eval()
    feats: Dict[str, List[torch.Tensor]] = {kind: [] for kind in kinds}
    try:
        for images in batches:
            autocast = (torch.autocast(images.device.type, dtype=amp_dtype)
                        if amp_dtype is not None else nullcontext())
            with autocast:
                batch_feats = read(backbone, images, kinds)
            for kind in kinds:
                feat = batch_feats[kind].float()
                feats[kind].append(feat if out_device is None else feat.to(out_device))
    finally:
        backbone.train(was_training)
    return {kind: torch.cat(v) for kind, v in feats.items()}


def gather_in_dataset_order(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """Every rank's rows of a ``DefaultSampler(shuffle=False)`` shard, in dataset order.

    Such a sampler gives rank r the dataset indices r, r + W, r + 2W, ... (W ranks), padded with
    the first indices again so that every rank has ceil(size / W) of them. Interleaving the
    gathered shards and cutting at ``size`` gives back each index once, in order.

    Args:
        tensor (Tensor): this rank's rows, n x ... (the same n on every rank).
        size (int): the dataset's length.

    Returns:
        Tensor: size x ..., on ``tensor``'s device. One process: ``tensor[:size]``.
    """
    world = get_world_size()
    if world == 1:
        return tensor[:size]
    counts = all_gather(torch.tensor([tensor.shape[0]], device=tensor.device))
    if len({int(c) for c in counts}) != 1:
        raise RuntimeError(f'ranks extracted different numbers of samples '
                           f'({[int(c) for c in counts]}): the loader must use '
                           f'DefaultSampler(shuffle=False, round_up=True).')
    shards = all_gather(tensor.contiguous())  # W x (n x ...)
    return torch.stack(shards, dim=1).flatten(0, 1)[:size]


def _check_sampler(loader) -> None:
    sampler = getattr(loader, 'sampler', None)
    ok = (isinstance(sampler, DefaultSampler) and not sampler.shuffle and sampler.round_up)
    if not ok:
        raise ValueError(
            f'k-NN under {get_world_size()} processes gathers the features of every rank in '
            f'dataset order, which needs sampler=dict(type=\'DefaultSampler\', shuffle=False) '
            f'(round_up=True); the loader has {type(sampler).__name__}.')


def features_from_dataloader(model: nn.Module, loader: Iterable,
                             kinds: Optional[Sequence[str]] = None,
                             amp_dtype: Optional[torch.dtype] = None,
                             progress: bool = False
                             ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of ``model.backbone`` and labels for a labelled mmpretrain dataloader.

    The batches go through ``model.data_preprocessor`` (normalisation, BGR->RGB, move to the
    model's device) exactly as in training. Under several processes each rank extracts the
    shard its sampler gives it and the shards are gathered (mmengine.dist), so every rank
    returns the features of the whole dataset, in dataset order: what one process would.

    Args:
        model (nn.Module): a model with ``backbone`` and ``data_preprocessor``.
        loader (Iterable): labelled batches; a ``DataLoader`` with ``DefaultSampler(shuffle=
            False)`` when distributed.
        kinds (Sequence[str], optional): feature kinds; all the backbone has by default.
        amp_dtype (torch.dtype, optional): autocast dtype for extraction.
        progress (bool): show a progress bar with ETA on rank 0 (stderr).

    Returns:
        tuple: ({kind: N x C}, N labels), on the model's device.
    """
    distributed = get_world_size() > 1
    if distributed:
        _check_sampler(loader)
    labels: List[torch.Tensor] = []
    bar = None
    if progress and get_rank() == 0:
        # counts this rank's images; the other ranks run at the same pace
        bar = ProgressBar(len(loader.sampler) if hasattr(loader, 'sampler') else len(loader),
                          file=sys.stderr)

    def images():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            inputs = data['inputs']
            labels.append(torch.tensor([int(s.gt_label) for s in data['data_samples']],
                                       device=inputs.device))
            yield inputs
            if bar is not None:
                bar.update(inputs.shape[0])

    feats = backbone_features(model.backbone, images(), kinds, amp_dtype)
    if bar is not None:
        sys.stderr.write('\n')
    label_tensor = torch.cat(labels)
    if distributed:
        size = len(loader.dataset)
        feats = {kind: gather_in_dataset_order(v, size) for kind, v in feats.items()}
        label_tensor = gather_in_dataset_order(label_tensor, size)
    return feats, label_tensor
