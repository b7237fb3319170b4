"""Stop (or skip the step) when a loss term is NaN or inf, naming the term and the iteration."""
import math
from typing import List

import torch
import torch.distributed as dist
from mmengine.dist import is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guards every training step against non-finite losses.

    It checks each loss term of the model's ``parse_losses`` before the optimizer steps.
    ``action='stop'`` (default) raises ``FloatingPointError`` naming the term(s) and the
    iteration, before the bad update and before any checkpoint of it. ``action='skip'`` drops
    the step (no optimizer update; gradients cleared), logs it, and stops after ``max_skips``
    skipped steps. In distributed runs the decision is all-reduced, so every rank skips together.

    Args:
        action (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
        max_skips (int): with ``'skip'``, stop after this many skipped steps. Defaults to 10.
    """
    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 10):
        if action not in ('stop', 'skip'):
            raise ValueError(f"action={action!r}: use 'stop' or 'skip'.")
        self.action, self.max_skips = action, max_skips
        self.skipped = 0
        self._bad_terms: List[str] = []

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optim_wrapper = runner.optim_wrapper
        parse_losses, update_params = model.parse_losses, optim_wrapper.update_params

        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            self._bad_terms = [k for k, v in log_vars.items() if not math.isfinite(float(v))]
            return loss, log_vars

        def guarded_update_params(loss, *args, **kwargs):
            bad = torch.tensor(float(bool(self._bad_terms)))
            if is_distributed():
                dist.all_reduce(bad)  # one rank's NaN stops or skips every rank
            if not bad.item():
                return update_params(loss, *args, **kwargs)
            where = (f'non-finite {", ".join(self._bad_terms) or "loss on another rank"} at '
                     f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})')
            if self.action == 'stop' or self.skipped >= self.max_skips:
                raise FloatingPointError(
                    f'{where}. Training stopped before the update. Lower the learning rate, '
                    f'check the data, or use NonFiniteLossHook(action="skip").')
            self.skipped += 1
            runner.logger.warning(f'{where}: step skipped ({self.skipped} so far)')
            # Backward a zero built from the parameters, so that DDP's gradient reduction of
            # this step completes on every rank; then drop the gradients without a step.
            params = [p for p in model.parameters() if p.requires_grad]
            optim_wrapper.backward(sum((p * 0).sum() for p in params))
            optim_wrapper.zero_grad()

        model.parse_losses = checked_parse_losses
        optim_wrapper.update_params = guarded_update_params
