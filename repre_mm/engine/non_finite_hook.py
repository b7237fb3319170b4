"""Stop (or skip the step) when a loss term is NaN or inf, naming the term and the iteration."""
from typing import Dict, List

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guards every training step against non-finite losses.

    It checks each loss term of the model's ``parse_losses`` before the optimizer steps.
    ``action='stop'`` (default) raises ``FloatingPointError`` naming the term(s) and the
    iteration, before the bad update and before any checkpoint of it. ``action='skip'`` drops
    the step: no optimizer update, gradients cleared, and every buffer and frozen parameter the
    forward pass changed (a momentum encoder or teacher updated in ``loss``, BatchNorm
    statistics, DINO's centre) is restored; it logs the step and stops once ``max_skips`` steps
    have been skipped. In distributed runs the decision is all-reduced, so every rank skips (or
    stops) at the same iteration.

    With ``'skip'`` the hook copies the buffers and frozen parameters before each step (for
    MoCo v3 about one encoder's worth of memory): the price of an exact skip.

    Args:
        action (str): ``'stop'`` or ``'skip'``. Defaults to ``'stop'``.
        max_skips (int): with ``'skip'``, a non-finite step after this many skipped ones stops
            the run. Defaults to 10.
    """
    priority = 'VERY_HIGH'

    def __init__(self, action: str = 'stop', max_skips: int = 10):
        if action not in ('stop', 'skip'):
            raise ValueError(f"action={action!r}: use 'stop' or 'skip'.")
        self.action, self.max_skips = action, max_skips
        self.skipped = 0
        self._log_vars: Dict[str, torch.Tensor] = {}
        self._saved: List[torch.Tensor] = []

    @staticmethod
    def _state_outside_optimizer(model) -> List[torch.Tensor]:
        """The tensors a forward pass may change in place: buffers and parameters the optimizer
        does not own (``requires_grad=False``, e.g. an EMA copy)."""
        return list(model.buffers()) + [p for p in model.parameters() if not p.requires_grad]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.action == 'skip':
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            self._saved = [t.detach().clone() for t in self._state_outside_optimizer(model)]

    def _non_finite_terms(self) -> List[str]:
        names = list(self._log_vars)
        # detached: float() of a tensor that requires grad warns on every step; one sync
        values = torch.stack([v.detach().float().reshape(()) for v in self._log_vars.values()])
        return [n for n, ok in zip(names, torch.isfinite(values).tolist()) if not ok]

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optim_wrapper = runner.optim_wrapper
        parse_losses, update_params = model.parse_losses, optim_wrapper.update_params

        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            self._log_vars = log_vars
            return loss, log_vars

        def guarded_update_params(loss, *args, **kwargs):
            bad_terms = self._non_finite_terms()
            bad = torch.tensor(float(bool(bad_terms)))
            if is_distributed():
                all_reduce(bad)  # one rank's NaN stops or skips every rank (any backend)
            if not bad.item():
                return update_params(loss, *args, **kwargs)
            where = (f'non-finite {", ".join(bad_terms) or "loss on another rank"} at '
                     f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})')
            if self.action == 'stop':
                raise FloatingPointError(
                    f'{where}. Training stopped before the update. Lower the learning rate, '
                    f'check the data, or use NonFiniteLossHook(action="skip").')
            if self.skipped >= self.max_skips:
                raise FloatingPointError(
                    f'{where}, after max_skips={self.max_skips} skipped steps. Training stopped '
                    f'before the update. Lower the learning rate or check the data.')
            self.skipped += 1
            runner.logger.warning(f'{where}: step skipped ({self.skipped} so far)')
            # The backward of the step's own loss runs DDP's gradient reduction exactly as in a
            # normal step on every rank (a different graph could hang it); the non-finite
            # gradients are then dropped without a step.
            optim_wrapper.backward(loss)
            optim_wrapper.zero_grad()
            for saved, tensor in zip(self._saved, self._state_outside_optimizer(model)):
                tensor.data.copy_(saved)

        model.parse_losses = checked_parse_losses
        optim_wrapper.update_params = guarded_update_params
