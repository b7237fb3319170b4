"""Save the random generators with each checkpoint, so that a resumed run continues exactly."""
import random

import numpy as np
import torch
from mmengine.hooks import Hook

from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class RandomStateCheckpointHook(Hook):
    """Stores the states of Python's ``random``, NumPy's global generator and torch's CPU (and
    CUDA) generators in every checkpoint, and restores them on resume.

    mmengine restores the model, optimizer, schedulers and counters but not these generators;
    the data augmentations of the main process (``num_workers=0``) and dropout draw from them, so
    without this a resumed run sees different crops than the run it continues. Checkpoints
    stay loadable with ``weights_only=True`` (tuples, ints and tensors only)."""
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        version, mt_state, gauss = random.getstate()
        _, keys, pos, has_gauss, cached = np.random.get_state()
        checkpoint['random_state'] = dict(
            python=(version, list(mt_state), gauss),
            numpy=(torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                   float(cached)),
            torch=torch.get_rng_state(),
            cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('random_state')
        if state is None:
            runner.logger.warning('the checkpoint has no random state (written without '
                                  'RandomStateCheckpointHook): augmentations will differ from '
                                  'an uninterrupted run.')
            return
        version, mt_state, gauss = state['python']
        random.setstate((version, tuple(mt_state), gauss))
        keys, pos, has_gauss, cached = state['numpy']
        np.random.set_state(('MT19937', keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state['torch'])
        if state['cuda'] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state['cuda'])
