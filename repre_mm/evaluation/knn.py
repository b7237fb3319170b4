"""Weighted k-NN classification of frozen features (the DINO protocol).

Features are L2-normalised; each query takes its k most cosine-similar bank samples, and each
neighbour votes for its label with weight exp(similarity / T). Defaults: k=20, T=0.07.
"""
from contextlib import contextmanager
from typing import Dict, Iterable, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from mmpretrain.models.backbones import VisionTransformer

FEATURE_KINDS = ('cls', 'patch_mean')


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07,
                query_chunk: int = 1024, bank_chunk: int = 65536) -> torch.Tensor:
    """Predicted labels for ``queries`` (Q x D) from ``bank`` (N x D, labels N).

    Memory stays at query_chunk x (bank_chunk + k): a bank of ImageNet size never has to be
    compared with all queries at once.
    """
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    predictions = []
    for q in queries.split(query_chunk):
        top_sim = torch.full((q.shape[0], 0), float('-inf'))
        top_idx = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for start in range(0, bank.shape[0], bank_chunk):
            sim = q @ bank[start:start + bank_chunk].T
            sim, idx = sim.topk(min(k, sim.shape[1]), dim=1)
            top_sim, order = torch.cat([top_sim, sim], 1).topk(
                min(k, top_sim.shape[1] + sim.shape[1]), dim=1)
            top_idx = torch.cat([top_idx, idx + start], 1).gather(1, order)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(q.shape[0], num_classes)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions)


def knn_accuracy(bank, bank_labels, queries, query_labels, k=20, temperature=0.07,
                 num_classes=None) -> float:
    """Top-1 accuracy in percent."""
    if num_classes is None:
        num_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return (pred == query_labels).float().mean().item() * 100


@contextmanager
def _final_tokens(backbone: VisionTransformer) -> Iterator[List[torch.Tensor]]:
    """Records the final-norm tokens (B x (extra + hw) x C) of each backbone call."""
    out: List[torch.Tensor] = []
    last = backbone.layers[-1]

    def hook(module, args, output):
        out.append(backbone.ln1(output) if backbone.final_norm else output)

    handle = last.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


@torch.no_grad()
def extract_features(backbone: nn.Module, batches: Iterable,
                     kinds=FEATURE_KINDS) -> Dict[str, torch.Tensor]:
    """Features of a ViT for every image of ``batches`` (each B x 3 x H x W, normalised).

    ``cls``: the CLS token after the final norm; ``patch_mean``: the mean of the patch tokens
    after the final norm. Returns {kind: N x C}.
    """
    if not isinstance(backbone, VisionTransformer):
        raise TypeError(f'k-NN features need a VisionTransformer backbone, got '
                        f'{type(backbone).__name__}.')
    for kind in kinds:
        if kind not in FEATURE_KINDS:
            raise ValueError(f'feature kind {kind!r} is not one of {FEATURE_KINDS}.')
    was_training = backbone.training
    backbone.eval()
    feats: Dict[str, List[torch.Tensor]] = {kind: [] for kind in kinds}
    try:
        for images in batches:
            with _final_tokens(backbone) as tokens:
                backbone(images)
            x = tokens[0]
            if 'cls' in feats:
                feats['cls'].append(x[:, 0].cpu())
            if 'patch_mean' in feats:
                feats['patch_mean'].append(x[:, backbone.num_extra_tokens:].mean(1).cpu())
    finally:
        backbone.train(was_training)
    return {kind: torch.cat(v) for kind, v in feats.items()}


def features_from_dataloader(model: nn.Module, loader: Iterable,
                             kinds=FEATURE_KINDS) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of ``model.backbone`` and labels for a labelled mmpretrain dataloader.

    The batches go through ``model.data_preprocessor`` (normalisation, BGR->RGB) exactly as in
    training. Returns ({kind: N x C}, N labels).
    """
    labels: List[int] = []

    def images():
        for batch in loader:
            data = model.data_preprocessor(batch, False)
            labels.extend(int(s.gt_label) for s in data['data_samples'])
            yield data['inputs']

    feats = extract_features(model.backbone, images(), kinds)
    return feats, torch.tensor(labels)


def linear_probe_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                          test_feats: torch.Tensor, test_labels: torch.Tensor,
                          steps: int = 300, lr: float = 0.01, weight_decay: float = 1e-4,
                          seed: int = 0) -> float:
    """Top-1 (percent) of a linear classifier on frozen, standardised features.

    Full-batch AdamW on the cross-entropy; meant for small feature sets (the small-scale
    benchmark). ImageNet linear probes use the mmpretrain configs under configs/benchmarks.
    """
    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    x_train, x_test = (train_feats - mean) / std, (test_feats - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(num_classes, x_train.shape[1], generator=generator) * 0.01)
    weight.requires_grad_()
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(x_train @ weight.T + bias, train_labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        pred = (x_test @ weight.T + bias).argmax(1)
    return (pred == test_labels).float().mean().item() * 100
