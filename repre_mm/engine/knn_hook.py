"""k-NN accuracy of the online encoder during pre-training, logged like any metric."""
import copy
import time
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpretrain.registry import HOOKS
from ..evaluation.knn import (feature_shard_from_dataloader, features_from_dataloader,
                              knn_accuracy)


@HOOKS.register_module()
class KNNEvaluationHook(Hook):
    """Every ``interval`` epochs (and after the last), classify ``query_dataloader`` by k-NN over
    the features of ``bank_dataloader`` and log ``knn/<kind>_top1`` (percent).

    Args:
        bank_dataloader (dict): labelled images whose features form the bank (a train split).
        query_dataloader (dict): labelled images to classify (a val / test split).
        interval (int): epochs between evaluations. Defaults to 1.
        k (int): neighbours. Defaults to 20.
        temperature (float): vote weight exp(sim / T). Defaults to 0.07.
        kinds (Sequence[str], optional): ``'cls'`` and / or ``'patch_mean'``. Defaults to
            all the backbone has (ViT: both; Swin: ``'patch_mean'``, its pooled last stage).
        before_train (bool): also evaluate the untrained encoder. Defaults to False.

    Under DDP every rank extracts and keeps only its shard of the bank
    (``feature_shard_from_dataloader``, the sampler's padding dropped); the queries are
    gathered (``features_from_dataloader``), each rank finds the k nearest of all queries in
    its shard, and the ranks' candidates are merged (``knn_topk``; ties in similarity go to
    the smaller bank index, as in one process): the logged number is the one a single process
    computes, with ~1/W of the bank per rank. For that the loaders always use
    ``DefaultSampler(shuffle=False)``, whatever sampler the configs name.
    """
    priority = 'LOW'

    def __init__(self, bank_dataloader: dict, query_dataloader: dict, interval: int = 1,
                 k: int = 20, temperature: float = 0.07,
                 kinds: Optional[Sequence[str]] = None, before_train: bool = False):
        self.bank_cfg, self.query_cfg = bank_dataloader, query_dataloader
        self.interval, self.k, self.temperature = interval, k, temperature
        self.kinds = None if kinds is None else tuple(kinds)
        self.evaluate_before_train = before_train
        self.history = []  # [(epoch, {kind: top1})], for tools that drive a Runner directly
        self._loaders: Optional[tuple] = None

    def before_train(self, runner) -> None:
        self._loaders = tuple(runner.build_dataloader(self._unshuffled(cfg))
                              for cfg in (self.bank_cfg, self.query_cfg))
        if self.evaluate_before_train:
            self._evaluate(runner, epoch=0)

    @staticmethod
    def _unshuffled(loader_cfg: dict) -> dict:
        # The shards of DefaultSampler(shuffle=False) interleave in a known order, which is
        # what gives each bank row its dataset index and the queries back in dataset order.
        loader_cfg = copy.deepcopy(loader_cfg)
        loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False, round_up=True)
        return loader_cfg

    def after_train_epoch(self, runner) -> None:
        if self.every_n_epochs(runner, self.interval) or self.is_last_train_epoch(runner):
            # the runner counts the finished epoch only after these hooks
            self._evaluate(runner, epoch=runner.epoch + 1)

    def _evaluate(self, runner, epoch: int) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        start = time.time()
        bank = feature_shard_from_dataloader(model, self._loaders[0], self.kinds)
        queries, query_labels = features_from_dataloader(model, self._loaders[1], self.kinds)
        results = {}
        for kind in bank.feats:
            results[kind] = knn_accuracy(bank.feats[kind], bank.labels, queries[kind],
                                         query_labels, self.k, self.temperature,
                                         bank_indices=bank.indices)
            runner.message_hub.update_scalar(f'knn/{kind}_top1', results[kind])
        self.history.append((epoch, results))
        runner.logger.info(
            f'k-NN (k={self.k}, T={self.temperature}) after epoch {epoch}: ' +
            ', '.join(f'{kind} top-1 {acc:.2f}%' for kind, acc in results.items()) +
            f' (bank {bank.size}, queries {len(query_labels)}, '
            f'{time.time() - start:.1f} s)')
        runner.visualizer.add_scalars({f'knn/{k}_top1': v for k, v in results.items()},
                                      step=epoch)
