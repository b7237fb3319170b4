"""The weights a training run starts from, saved before its first iteration."""
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class InitialWeightsHook(Hook):
    """Saves the model as training starts (``<work_dir>/<filename>``, weights and meta only),
    after mmengine has initialised it and loaded every ``init_cfg`` checkpoint.

    A reference "before fine-tuning" is then these very weights: the pre-trained backbone and
    the heads as this run drew them, not a rebuild that draws its heads from another random
    stream. Nothing is written on resume (the run no longer starts from its initial weights) or
    where the file exists; training itself is unchanged (saving draws no random numbers).

    Args:
        filename (str): Defaults to ``'iter_0.pth'``.
    """
    priority = 'VERY_LOW'

    def __init__(self, filename: str = 'iter_0.pth'):
        self.filename = filename

    def before_train(self, runner) -> None:
        if runner.iter != 0 or osp.exists(osp.join(runner.work_dir, self.filename)):
            return
        runner.save_checkpoint(runner.work_dir, self.filename, save_optimizer=False,
                               save_param_scheduler=False)
