"""What a short training run must show to call a machine ready: a per-iteration record."""
import json
import math
import os.path as osp
import time
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class TrainHealthHook(Hook):
    """Records the set-up and every iteration's losses, loss scale and time; writes them as JSON.

    ``tools/benchmarks/gpu_check.py`` reads the file to check a run: losses finite, fp16 loss
    scale settled, ``loss_rec`` falling, the process group's backend (NCCL on GPUs) and the
    SyncBN layers that were built.

    Args:
        out_file (str): file name in the work directory (rank 0 writes it after training).
            Defaults to ``'health.json'``.

    The file: ``{"setup": {...}, "iters": [{"iter", "time", "loss", "loss_rec", ...,
    "loss_scale"}, ...]}``; ``loss_scale`` only with a loss-scaling optimizer wrapper (fp16).
    """
    priority = 'VERY_LOW'  # after the optimizer step has updated the loss scale

    def __init__(self, out_file: str = 'health.json'):
        self.out_file = out_file
        self.setup: dict = {}
        self.iters: list = []

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        param = next(model.parameters())
        optim = runner.optim_wrapper
        self.setup = dict(
            world_size=get_world_size(),
            backend=torch_dist.get_backend() if torch_dist.is_initialized() else None,
            model_wrapper=type(runner.model).__name__,
            optim_wrapper=type(optim).__name__,
            cast_dtype=str(getattr(optim, 'cast_dtype', None)),
            loss_scaler=type(getattr(optim, 'loss_scaler', None)).__name__,
            syncbn_layers=sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules()),
            device=str(param.device),
            device_name=(torch.cuda.get_device_name(param.device)
                         if param.device.type == 'cuda' else 'cpu'))
        self.iters = []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        record = dict(iter=runner.iter + 1, time=time.perf_counter())
        for key, value in (outputs or {}).items():
            if key.startswith('loss'):
                record[key] = float(value)
        scaler = getattr(runner.optim_wrapper, 'loss_scaler', None)
        if scaler is not None:
            record['loss_scale'] = float(scaler.get_scale())
        self.iters.append(record)

    def after_train(self, runner) -> None:
        if get_rank() != 0:
            return
        # JSON has no NaN / inf: they are written as strings, which the checks count as such
        iters = [{k: (v if not isinstance(v, float) or math.isfinite(v) else str(v))
                  for k, v in r.items()} for r in self.iters]
        with open(osp.join(runner.work_dir, self.out_file), 'w') as f:
            json.dump(dict(setup=self.setup, iters=iters), f)
