"""Loading user checkpoints: weights only, and never half of them silently."""
from typing import Dict, Optional

import torch
from torch import nn


def load_weights(path: str) -> Dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (an mmengine checkpoint or a bare state dict),
    loaded with ``weights_only=True``: a checkpoint cannot run code on this machine. The
    message hub an mmengine training checkpoint also holds is admitted (see
    ``repre_mm.compat.mmengine_checkpoint_loading``), nothing else."""
    checkpoint = _safe_load(path)
    if isinstance(checkpoint, dict) and 'state_dict' in checkpoint:
        checkpoint = checkpoint['state_dict']
    if not isinstance(checkpoint, dict) or not all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f'{path} holds no state dict of tensors.')
    return checkpoint


def load_checkpoint_meta(path: str) -> dict:
    """The ``meta`` dict of an mmengine checkpoint (epoch, iter, ...), loaded as safely as
    :func:`load_weights`; {} for a bare state dict."""
    checkpoint = _safe_load(path)
    return dict(checkpoint.get('meta') or {}) if isinstance(checkpoint, dict) else {}


def _safe_load(path: str):
    from .. import compat
    with compat.mmengine_checkpoint_loading():
        return torch.load(path, map_location='cpu', weights_only=True)


def load_strict(module: nn.Module, state_dict: Dict[str, torch.Tensor],
                prefix: Optional[str] = None, source: str = 'checkpoint') -> None:
    """Load ``state_dict`` (its keys under ``prefix``, e.g. ``'backbone.'``) into ``module``;
    any missing or unexpected key is an error that lists them.

    Not mmengine's ``load_checkpoint(strict=True, revise_keys=...)``: revise_keys renames but
    keeps the keys outside the prefix (a RePre checkpoint's decoder.* would be unexpected), and
    its prefix loader (``_load_checkpoint_with_prefix``) is private API."""
    if prefix:
        state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not state_dict:
            raise KeyError(f'{source} has no key starting with {prefix!r}.')
    missing, unexpected = module.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise KeyError(
            f'{source} does not match {type(module).__name__}: {len(missing)} missing keys '
            f'{missing[:10]}{" ..." if len(missing) > 10 else ""}, {len(unexpected)} unexpected '
            f'keys {unexpected[:10]}{" ..." if len(unexpected) > 10 else ""}. Check the config '
            f'(arch, patch size, prefix) against the checkpoint.')
