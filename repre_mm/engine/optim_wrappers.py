"""bf16 autocast where mmengine's AmpOptimWrapper does not run (it asserts a GPU/NPU/MLU)."""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

# The root registry: mmpretrain, mmdet and mmseg configs all find it.
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class BF16AutocastOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under ``torch.autocast(dtype=bfloat16)``.

    bf16 has the exponent range of fp32, so unlike fp16 it needs no loss scaling. The device type
    of the autocast is taken from the model's first parameter (``'cpu'`` on a CPU machine).
    """

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device_type = next(model.parameters()).device.type
        with super().optim_context(model), torch.autocast(
                device_type=device_type, dtype=torch.bfloat16):
            yield
