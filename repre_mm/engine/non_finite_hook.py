"""Stop (or skip the step) when a loss term is NaN or inf, naming the term and the iteration."""
import functools
import math
from typing import Dict, List

import torch
from mmengine.dist import all_reduce, is_distributed
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch.nn.parallel import DistributedDataParallel

from mmpretrain.registry import HOOKS

#: The message hub's key for the number of skipped steps: the runner saves it in every
#: checkpoint and ``--resume`` restores it (``load_from`` does not: a new run starts at 0).
SKIPPED_KEY = 'NonFiniteLossHook.skipped'


def _all_finite(tensors: List[torch.Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite, from one fp32 sum a tensor (a NaN or inf
    element makes it NaN or inf; only a sum beyond 3e38 counts as non-finite wrongly) and one
    sync. (A max-abs, ``_foreach_norm(.., inf)``, is 100x slower on CPU.)"""
    sums = torch.stack([t.detach().sum(dtype=torch.float32) for t in tensors])
    return bool(torch.isfinite(sums).all())


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Guards every training step against non-finite losses.

    It checks each loss term of the model's ``parse_losses`` before the optimizer steps.
    ``action='stop'`` (default) raises ``FloatingPointError`` naming the term(s) and the
    iteration, before the bad update and before any checkpoint of it. ``action='skip'`` drops
    the step: no optimizer update, gradients cleared, and every buffer and frozen parameter the
    forward pass changed (a momentum encoder or teacher updated in ``loss``, BatchNorm
    statistics, DINO's centre) is restored; it logs the step and stops once ``max_skips`` steps
    have been skipped. The number of skipped steps is kept in the message hub
    (:data:`SKIPPED_KEY`), so checkpoints hold it and ``--resume`` goes on counting from it.
    Under fp16 dynamic loss scaling (mmengine's ``AmpOptimWrapper``, ``loss_scale='dynamic'``
    or a dict) a skipped step lowers the loss scale as ``GradScaler.update`` does after a step
    with inf gradients (scale times ``backoff_factor``, growth tracker reset), as the scaler
    would have without the hook.

    In distributed runs every rank takes the same decision at the same iteration, in one of two
    ways:

    * **From DDP's reduced gradients, without a collective of the hook's own**, where
      ``runner.model`` is a ``DistributedDataParallel`` (mmengine's wrappers are), no loss
      scaler is enabled and gradients are not accumulated (``accumulative_counts=1``). The hook
      then decides after backward, before the optimizer step (it wraps ``optim_wrapper.step``),
      from the gradients DDP has already all-reduced: they are the same on every rank. A rank
      whose loss is non-finite back-propagates it multiplied by NaN, so every gradient its loss
      reaches is NaN after the reduction, on every rank, even when the bad term itself reaches
      no trainable parameter (a frozen teacher's output, a NaN loss weight). This needs every
      parameter that requires grad to have a gradient after backward; where one has none (a
      parameter no rank used, which DDP leaves without one on every rank alike), the hook
      all-reduces its flag instead, after backward. On this path a step whose losses are finite
      but whose reduced gradients are not is dropped (or stops the run) the same way.
    * **By all-reducing a flag before backward** otherwise: no DDP wrapper, fp16 loss scaling
      (overflowing gradients are then routine and the ``GradScaler``'s business, not a
      non-finite loss), or gradient accumulation (the gradients of a step are not reduced).

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
        self._after_backward = False  # decide from DDP's reduced gradients (see above)
        self._in_update = False

    @staticmethod
    def _state_outside_optimizer(model) -> List[torch.Tensor]:
        """The tensors a forward pass may change in place: buffers and parameters the optimizer
        does not own (``requires_grad=False``, e.g. an EMA copy)."""
        return list(model.buffers()) + [p for p in model.parameters() if not p.requires_grad]

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self.action == 'skip':
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            self._saved = [t.detach().clone() for t in self._state_outside_optimizer(model)]

    def _loss_values(self) -> torch.Tensor:
        # detached: float() of a tensor that requires grad warns on every step
        return torch.stack([v.detach().float().reshape(()) for v in self._log_vars.values()])

    def _non_finite_terms(self) -> List[str]:
        names = list(self._log_vars)
        return [n for n, ok in zip(names, torch.isfinite(self._loss_values()).tolist()) if not ok]

    @staticmethod
    def _on_any_rank(flag: bool) -> bool:
        bad = torch.tensor(float(flag))
        if is_distributed():
            all_reduce(bad)  # one rank's NaN stops or skips every rank (any backend)
        return bool(bad.item())

    @staticmethod
    def _back_off_loss_scale(optim_wrapper) -> None:
        """What ``GradScaler.update()`` does after a step with inf gradients: scale times
        ``backoff_factor``, growth tracker reset to 0. A static scale (mmengine's
        ``loss_scale=<float>``, re-set every step) is left alone."""
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        if (scaler is None or not scaler.is_enabled()
                or getattr(optim_wrapper, '_scale_update_param', None) is not None):
            return
        state = scaler.state_dict()
        state.update(scale=state['scale'] * state['backoff_factor'], _growth_tracker=0)
        scaler.load_state_dict(state)

    def _raise_unless_skipping(self, where: str) -> None:
        if self.action == 'stop':
            raise FloatingPointError(
                f'{where}. Training stopped before the update. Lower the learning rate, '
                f'check the data, or use NonFiniteLossHook(action="skip").')
        if self.skipped >= self.max_skips:
            raise FloatingPointError(
                f'{where}, after max_skips={self.max_skips} skipped steps. Training stopped '
                f'before the update. Lower the learning rate or check the data.')

    def _skipped_step(self, runner, model, where: str) -> None:
        """The bookkeeping of a dropped step, once its gradients are cleared (or about to be)."""
        self.skipped += 1
        runner.message_hub.update_info(SKIPPED_KEY, self.skipped)
        runner.logger.warning(f'{where}: step skipped ({self.skipped} so far)')
        for saved, tensor in zip(self._saved, self._state_outside_optimizer(model)):
            tensor.data.copy_(saved)
        self._back_off_loss_scale(runner.optim_wrapper)

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        optim_wrapper = runner.optim_wrapper
        self.skipped = runner.message_hub.get_info(SKIPPED_KEY, 0)  # a resumed run's count
        scaler = getattr(optim_wrapper, 'loss_scaler', None)
        self._after_backward = (isinstance(runner.model, DistributedDataParallel)
                                and not (scaler is not None and scaler.is_enabled())
                                and getattr(optim_wrapper, '_accumulative_counts', 1) == 1)
        parse_losses, step = model.parse_losses, optim_wrapper.step

        def checked_parse_losses(losses):
            loss, log_vars = parse_losses(losses)
            self._log_vars = log_vars
            return loss, log_vars

        model.parse_losses = checked_parse_losses
        optim_wrapper.update_params = self._guarded_update_params(runner, model)
        # wraps: keeps the marks mmengine's param schedulers put on the step they count
        optim_wrapper.step = functools.wraps(step)(self._guarded_step(runner, model, step))

    @staticmethod
    def _where(runner, bad_terms: List[str], other: str) -> str:
        return (f'non-finite {", ".join(bad_terms) or other} at '
                f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})')

    def _guarded_update_params(self, runner, model):
        """The optim wrapper's ``update_params``, which drops (or stops at) a step of
        non-finite losses on any rank; after DDP's backward it leaves that to
        :meth:`_guarded_step`."""
        optim_wrapper = runner.optim_wrapper
        update_params = optim_wrapper.update_params

        def guarded_update_params(loss, *args, **kwargs):
            if self._after_backward:
                # No sync here: x 1 when every term is finite, x NaN (every gradient the loss
                # reaches becomes NaN, on every rank after DDP's reduction) when one is not.
                finite = torch.isfinite(self._loss_values()).all()
                self._in_update = True
                try:
                    return update_params(loss * torch.where(finite, 1.0, math.nan).to(loss),
                                         *args, **kwargs)
                finally:
                    self._in_update = False
            bad_terms = self._non_finite_terms()
            if not self._on_any_rank(bool(bad_terms)):
                return update_params(loss, *args, **kwargs)
            message = self._where(runner, bad_terms, 'loss on another rank')
            self._raise_unless_skipping(message)
            # The backward of the step's own loss runs DDP's gradient reduction exactly as in a
            # normal step on every rank (a different graph could hang it); the non-finite
            # gradients are then dropped without a step.
            optim_wrapper.backward(loss)
            optim_wrapper.zero_grad()
            self._skipped_step(runner, model, message)
        return guarded_update_params

    def _guarded_step(self, runner, model, step):
        """The optim wrapper's ``step``: inside :meth:`_guarded_update_params` after DDP's
        backward, skipped (or stopped at) when the reduced gradients are not finite."""

        def guarded_step(*args, **kwargs):
            if not self._in_update:
                return step(*args, **kwargs)
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            if all(g is not None for g in grads):
                bad = not _all_finite(grads)  # reduced by DDP: the same on every rank
                other = 'reduced gradients (the losses are finite on this rank)'
            else:  # a parameter without a gradient: the reduced ones may miss the NaN
                bad = self._on_any_rank(bool(self._non_finite_terms()))
                other = 'loss on another rank'
            if not bad:
                return step(*args, **kwargs)
            message = self._where(runner, self._non_finite_terms(), other)
            self._raise_unless_skipping(message)
            self._skipped_step(runner, model, message)  # update_params clears the gradients
        return guarded_step
