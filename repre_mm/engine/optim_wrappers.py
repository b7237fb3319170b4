"""bf16 autocast where mmengine's AmpOptimWrapper does not run (it asserts a GPU/NPU/MLU), and
layer-wise lr decay for mmseg / mmdet models."""
from contextlib import contextmanager
from functools import partial

import torch
from mmengine.optim import OptimWrapper

# The root registry: mmpretrain, mmdet and mmseg configs all find it.
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS

from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor


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


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise learning-rate decay for models that are not mmpretrain
    classifiers (mmseg's EncoderDecoder, mmdet's detectors): the depth of each parameter comes
    from ``model.backbone.get_layer_depth``; necks and heads count as the last layer."""

    def add_params(self, params, module, prefix='', get_layer_depth=None, **kwargs):
        if get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            get_layer_depth = partial(module.backbone.get_layer_depth, prefix='backbone.')
        return super().add_params(params, module, prefix, get_layer_depth, **kwargs)
