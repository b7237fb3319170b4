"""Weighted k-NN classification of frozen features (the DINO protocol).

Features are L2-normalised; each query takes its k most cosine-similar bank samples, and each
neighbour votes for its label with weight exp(similarity / T). Defaults: k=20, T=0.07.
Everything runs on the features' device. Under DDP every rank extracts and keeps its shard of
the bank (:func:`feature_shard_from_dataloader`), the queries are gathered
(:func:`features_from_dataloader`), each rank finds the k nearest of all queries in its shard and
the candidates are merged (:func:`knn_topk`): the accuracy is the one of a single process, with
ties in similarity going to the smaller bank index in both.

Similarities are exact (:func:`_grid_features`): the normalised features are rounded to a grid
of 2^-24 and multiplied in float64, where every product and partial sum of a dot product is an
integer below 2^53. A similarity then depends only on its query and bank row, never on the
BLAS kernel, the matrix shape, the chunks or the shard the row is in: equal rows tie exactly,
on every CPU and GPU. The price is a float64 product: about twice the float32 time on CPUs and
data-centre GPUs, far more on consumer GPUs with slow float64.
"""
import sys
from contextlib import nullcontext
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine.dataset import DefaultSampler
from mmengine.dist import all_gather, all_reduce, get_rank, get_world_size
from mmengine.utils import ProgressBar
from torch import nn

from mmpretrain.models.backbones import SwinTransformer, VisionTransformer
from .tokens import FINAL, block_tokens, patch_maps

FEATURE_KINDS = ('cls', 'patch_mean')


def default_kinds(backbone: nn.Module) -> Tuple[str, ...]:
    """The k-NN feature kinds a backbone has: a ViT both, a Swin only ``patch_mean`` (no CLS
    token)."""
    return ('patch_mean', ) if isinstance(backbone, SwinTransformer) else FEATURE_KINDS


# a candidate's key: the ordered bits of its similarity x 2^32 + (2^32 - 1 - its index)
_KEY_SHIFT = 2 ** 32
_NO_INDEX = _KEY_SHIFT - 1  # the index of a padding column: sorts after every real one


_GRID = 2.0 ** 24  # |feature| <= 1 -> |grid value| <= 2^24, |dot product| <= ~2^48 < 2^53


def _grid_features(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised rows rounded to integers on a grid of 2^-24, as float64 (exact there)."""
    features = features.to(torch.float64, copy=True)
    norms = features.norm(dim=1, keepdim=True).clamp_min_(1e-12)  # as F.normalize
    return features.div_(norms).mul_(_GRID).round_()


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _similarity_keys(sim: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """int64 keys that order (similarity descending, global index ascending) as integers.

    The float32 bits of a similarity, with the 31 low bits of negative ones flipped, order as
    int32 as the floats do; -0.0 is made +0.0 first, so the two compare equal as floats do.
    ``low`` is 2^32 - 1 - the global index, so a tie goes to the smaller index. Consumes
    ``sim``.
    """
    sim.add_(0.0)  # -0.0 -> +0.0
    bits = sim.view(torch.int32)
    negative = bits >> 31  # -1 where negative, else 0
    negative &= 0x7FFFFFFF
    bits ^= negative
    del negative
    return bits.to(torch.int64).mul_(_KEY_SHIFT).add_(low)


def _decode_keys(keys: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(similarities, global indices) of keys made by :func:`_similarity_keys`."""
    high = torch.div(keys, _KEY_SHIFT, rounding_mode='floor')
    index = _NO_INDEX - (keys - high * _KEY_SHIFT)
    high ^= (high >> 31) & 0x7FFFFFFF
    return high.to(torch.int32).view(torch.float32), index


def _sharded(bank_indices: Optional[torch.Tensor]) -> bool:
    return bank_indices is not None and get_world_size() > 1


def _bank_size(n: int, bank_indices: torch.Tensor, num_queries: int, device) -> int:
    """The whole bank's size, over every rank's shard; refuses shards that are not a split of
    0 .. size-1 and ranks with different numbers of queries."""
    # every rank's rows: their number, and the sum and largest of their indices, which tell
    # shards that hold each of 0 .. total-1 once from copies of one bank
    stats = torch.tensor([n, int(bank_indices.sum()) if n else 0], device=device)
    extremes = torch.tensor([int(bank_indices.max()) if n else -1, num_queries, -num_queries],
                            device=device)
    all_reduce(stats, op='sum')
    all_reduce(extremes, op='max')
    total, index_sum = (int(v) for v in stats)
    largest, most_queries, fewest_queries = (int(v) for v in extremes)
    if largest != total - 1 or index_sum != total * (total - 1) // 2:
        raise ValueError(f'the ranks\' bank_indices are not a split of 0 .. {total - 1} '
                         f'(largest {largest}, sum {index_sum}): each rank must pass '
                         f'its own shard, not a copy of the whole bank.')
    if most_queries != -fewest_queries:
        raise ValueError(f'the ranks have {-fewest_queries} to {most_queries} queries: '
                         f'every rank must pass all of them (features_from_dataloader).')
    return total


def _best_keys(bank: torch.Tensor, bank_indices: torch.Tensor, queries: torch.Tensor, k: int,
               total: int, query_chunk: int, bank_chunk: int) -> torch.Tensor:
    """Q x k keys (similarity, then smaller global index) of each query's k best rows of this
    rank's ``bank``, computed chunk by chunk."""
    device = bank.device
    n, dim = bank.shape
    num_queries = queries.shape[0]
    qc = max(1, min(query_chunk, _round_up(num_queries, 64)))
    bc = max(k, min(bank_chunk, _round_up(total, 64)))
    padded_queries = _round_up(max(num_queries, 1), qc)
    q_grid = torch.zeros(padded_queries, dim, dtype=torch.float64, device=device)
    q_grid[:num_queries] = _grid_features(queries.to(device))
    best = torch.full((padded_queries, k), torch.iinfo(torch.long).min, dtype=torch.long,
                      device=device)
    for start in range(0, n, bc):
        rows = min(bc, n - start)
        b_grid = _grid_features(bank[start:start + rows])
        low = torch.full((1, bc), _NO_INDEX, dtype=torch.long, device=device)
        low[0, :rows] = _NO_INDEX - bank_indices[start:start + rows]
        for q_start in range(0, padded_queries, qc):
            sim = torch.full((qc, bc), float('-inf'), device=device)  # a partial chunk's rest
            # exact integers; scaled by a power of two and rounded once: deterministic
            sim[:, :rows] = (q_grid[q_start:q_start + qc] @ b_grid.T).mul_(_GRID ** -2)
            keys = _similarity_keys(sim, low).topk(k, dim=1).values
            del sim
            merged = torch.cat([best[q_start:q_start + qc], keys], 1)
            best[q_start:q_start + qc] = merged.topk(k, dim=1).values
    return best[:num_queries]


def _labels_of(best: torch.Tensor, bank_indices: torch.Tensor,
               bank_labels: torch.Tensor) -> torch.Tensor:
    """The labels of this rank's candidates, by global index (a padding candidate gets 0)."""
    _, index = _decode_keys(best)
    labels = torch.zeros_like(index)
    n = bank_indices.shape[0]
    if n:
        order = bank_indices.argsort()
        sorted_indices = bank_indices[order]
        where = torch.searchsorted(sorted_indices, index).clamp_(max=n - 1)
        labels = torch.where(sorted_indices[where] == index, bank_labels[order][where], labels)
    return labels


@torch.no_grad()
def knn_topk(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int = 20,
             query_chunk: int = 1024, bank_chunk: int = 16384,
             bank_indices: Optional[torch.Tensor] = None
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The k most cosine-similar bank samples of every query, computed on ``bank``'s device.

    Neighbours are ordered by similarity, then by global bank index: of equally similar bank
    samples the one of smaller index comes first, whatever the order of the rows, the chunks
    and the split of the bank between processes. Similarities are exact products of the
    features rounded to a 2^-24 grid (module docstring), so they too are the same whatever the
    rows, chunks, shards, BLAS kernel or number of threads.

    One process: ``bank`` is the whole bank; its global indices are ``bank_indices`` (default
    0 .. N-1). Several processes (``bank_indices`` given, ``get_world_size() > 1``): every rank
    calls this with its own shard of the bank, the global dataset indices of those rows (each
    index on exactly one rank, e.g. :func:`feature_shard_from_dataloader`), and the same
    queries. Each rank scores all queries against its shard; the k best of each rank are
    gathered and merged, so every rank returns what one process with the whole bank returns.

    Memory on top of the inputs: a float64 copy of the queries, one float64 chunk of bank rows
    (bank_chunk x D), about 20 bytes per element of a query_chunk x bank_chunk block of
    similarities and keys, and the candidates: queries x k x 16 bytes, x world size when
    gathered.

    Args:
        bank (Tensor): n x D features; its device is where everything is computed.
        bank_labels (Tensor): n labels (moved to ``bank``'s device).
        queries (Tensor): Q x D features (moved to ``bank``'s device); the same on every rank.
        k (int): neighbours. Defaults to 20; at most the bank's size.
        query_chunk (int): queries compared at once. Defaults to 1024.
        bank_chunk (int): bank rows compared at once. Defaults to 16384.
        bank_indices (Tensor, optional): n global indices of ``bank``'s rows, < 2^32 - 1.

    Returns:
        tuple[Tensor]: Q x k similarities (float32), global bank indices and labels (int64),
        on ``bank``'s device.
    """
    device = bank.device
    n = bank.shape[0]
    bank_labels = bank_labels.to(device=device, dtype=torch.long)
    sharded = _sharded(bank_indices)
    if bank_indices is None:
        bank_indices = torch.arange(n, device=device)
    else:
        bank_indices = bank_indices.to(device=device, dtype=torch.long)
        if n and (int(bank_indices.min()) < 0 or int(bank_indices.max()) >= _NO_INDEX):
            raise ValueError(f'bank indices must be in 0 .. {_NO_INDEX - 1}.')
    if bank_indices.shape != (n, ) or bank_labels.shape != (n, ):
        raise ValueError(f'{n} bank rows need as many labels and indices, got '
                         f'{tuple(bank_labels.shape)} and {tuple(bank_indices.shape)}.')
    total = _bank_size(n, bank_indices, queries.shape[0], device) if sharded else n
    if total == 0:
        raise ValueError('the k-NN bank is empty.')
    if total >= _NO_INDEX:
        raise ValueError(f'a k-NN bank of {total} samples: at most {_NO_INDEX - 1}.')
    k = min(k, total)
    best = _best_keys(bank, bank_indices, queries, k, total, query_chunk, bank_chunk)
    labels = _labels_of(best, bank_indices, bank_labels)
    if sharded:
        keys = torch.cat(all_gather(best.contiguous()), 1)  # Q x (W k)
        labels = torch.cat(all_gather(labels.contiguous()), 1)
        best, pick = keys.topk(k, dim=1)
        labels = labels.gather(1, pick)
    sims, index = _decode_keys(best)
    return sims, index, labels


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                num_classes: int, k: int = 20, temperature: float = 0.07,
                query_chunk: int = 1024, bank_chunk: int = 16384,
                bank_indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Predicted labels for ``queries`` from ``bank``, computed on ``bank``'s device.

    The k neighbours of :func:`knn_topk` (ties in similarity go to the smaller bank index)
    vote for their labels with weight exp(similarity / T), added in that order, so the result
    does not depend on how many processes hold the bank.

    Args:
        bank (Tensor): N x D features (under several processes with ``bank_indices``: this
            rank's shard); its device is where everything is computed.
        bank_labels (Tensor): their labels (moved to ``bank``'s device).
        queries (Tensor): Q x D features (moved to ``bank``'s device).
        num_classes (int): number of classes of the labels.
        k (int): neighbours. Defaults to 20.
        temperature (float): vote weight exp(similarity / T). Defaults to 0.07.
        query_chunk (int): queries compared at once. Defaults to 1024.
        bank_chunk (int): bank rows compared at once. Defaults to 16384.
        bank_indices (Tensor, optional): global indices of ``bank``'s rows; see
            :func:`knn_topk`.

    Returns:
        Tensor: Q predicted labels, on ``bank``'s device (the same on every rank).
    """
    sims, _, labels = knn_topk(bank, bank_labels, queries, k, query_chunk, bank_chunk,
                               bank_indices)
    weights = (sims / temperature).exp()
    votes = torch.zeros(sims.shape[0], num_classes, device=sims.device)
    for j in range(sims.shape[1]):  # one neighbour per query at a time: a fixed order of sums
        votes.scatter_add_(1, labels[:, j:j + 1], weights[:, j:j + 1])
    return votes.argmax(dim=1)


def knn_accuracy(bank, bank_labels, queries, query_labels, k=20, temperature=0.07,
                 num_classes=None, bank_indices=None) -> float:
    """Top-1 accuracy in percent (computed on ``bank``'s device); ``bank_indices``: see
    :func:`knn_topk` (a shard of the bank per rank)."""
    if num_classes is None:
        largest = torch.stack([bank_labels.max() if len(bank_labels) else
                               bank_labels.new_tensor(-1), query_labels.max().to(
                                   bank_labels.device)]).max().reshape(1)
        if _sharded(bank_indices):
            all_reduce(largest, op='max')
        num_classes = int(largest) + 1
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature,
                       bank_indices=bank_indices)
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


class FeatureShard(NamedTuple):
    """This rank's rows of a dataset's features (one process: all of them).

    ``feats``: {kind: n x C}; ``labels``: n; ``indices``: the n global dataset indices of the
    rows, ascending, each index on exactly one rank; ``size``: the dataset's length.
    """
    feats: Dict[str, torch.Tensor]
    labels: torch.Tensor
    indices: torch.Tensor
    size: int


def _extract(model: nn.Module, loader: Iterable, kinds: Optional[Sequence[str]],
             amp_dtype: Optional[torch.dtype], progress: bool
             ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """This rank's features and labels, in its sampler's order (padding included)."""
    if get_world_size() > 1:
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
    return feats, torch.cat(labels)


def feature_shard_from_dataloader(model: nn.Module, loader: Iterable,
                                  kinds: Optional[Sequence[str]] = None,
                                  amp_dtype: Optional[torch.dtype] = None,
                                  progress: bool = False) -> FeatureShard:
    """Features and labels of the samples this rank's sampler gives it, and their indices.

    Nothing is gathered: each of W ranks keeps about 1/W of the dataset, the k-NN bank's share
    of :func:`knn_topk`. ``DefaultSampler(shuffle=False, round_up=True)`` gives rank r the
    dataset indices r, r + W, r + 2W, ..., padded with the first indices again so that every
    rank has ceil(size / W); the padding (sampler positions >= size) is dropped here, so every
    index is on exactly one rank. One process: every sample, indices 0 .. N-1 in the loader's
    order.

    Args: as :func:`features_from_dataloader`.

    Returns:
        FeatureShard: feats {kind: n x C}, labels, indices (on the model's device) and size.
    """
    feats, labels = _extract(model, loader, kinds, amp_dtype, progress)
    size = len(loader.dataset) if get_world_size() > 1 else len(labels)
    return drop_sampler_padding(feats, labels, size)


def drop_sampler_padding(feats: Dict[str, torch.Tensor], labels: torch.Tensor,
                         size: int) -> FeatureShard:
    """This rank's rows in ``DefaultSampler(shuffle=False, round_up=True)`` order, without the
    sampler's padding, with their dataset indices.

    Rank r of W holds the sampler positions r, r + W, ... < W * ceil(size / W); position p is
    dataset index p, or the padding copy of index p - size when p >= size (always the last
    rows), which is dropped: each index stays on exactly one rank. One process: all rows,
    indices 0 .. n-1.
    """
    world, rank = get_world_size(), get_rank()
    rows = len(labels)
    if world == 1:
        return FeatureShard(feats, labels, torch.arange(rows, device=labels.device), rows)
    if rows != -(-size // world):
        raise RuntimeError(f'rank {rank} extracted {rows} samples of {size}, not '
                           f'{-(-size // world)}: the loader must use '
                           f'DefaultSampler(shuffle=False, round_up=True).')
    positions = torch.arange(rank, world * rows, world, device=labels.device)
    keep = int((positions < size).sum())  # the padding is at the end
    return FeatureShard({kind: v[:keep] for kind, v in feats.items()}, labels[:keep],
                        positions[:keep], size)


def features_from_dataloader(model: nn.Module, loader: Iterable,
                             kinds: Optional[Sequence[str]] = None,
                             amp_dtype: Optional[torch.dtype] = None,
                             progress: bool = False
                             ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """Features of ``model.backbone`` and labels for a labelled mmpretrain dataloader.

    The batches go through ``model.data_preprocessor`` (normalisation, BGR->RGB, move to the
    model's device) exactly as in training. Under several processes each rank extracts the
    shard its sampler gives it and the shards are gathered (mmengine.dist), so every rank
    returns the features of the whole dataset, in dataset order: what one process would. That
    is for the queries of a k-NN (small); a bank of ImageNet size stays sharded instead:
    :func:`feature_shard_from_dataloader`.

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
    feats, labels = _extract(model, loader, kinds, amp_dtype, progress)
    if get_world_size() > 1:
        size = len(loader.dataset)
        feats = {kind: gather_in_dataset_order(v, size) for kind, v in feats.items()}
        labels = gather_in_dataset_order(labels, size)
    return feats, labels
