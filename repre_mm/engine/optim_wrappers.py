"""bf16 autocast where mmengine's AmpOptimWrapper does not run (it asserts a GPU/NPU/MLU),
layer-wise lr decay for mmseg / mmdet models, and param groups that ``torch.compile`` can
trace."""
from contextlib import contextmanager
from functools import partial

import torch
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper

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


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class PlainParamGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor, whose param groups are plain ``dict`` objects.

    With ``paramwise_cfg`` the default constructor passes its groups through a ``ConfigDict``,
    so every group the optimizer holds is a ``ConfigDict``. Eager training does not care, but
    mmengine's ``compile=True`` compiles ``optimizer.step`` too, and dynamo fails inside
    ``AdamW.step`` on them (``InternalTorchDynamoError``: 'UserDefinedDictVariable' object has
    no attribute 'items', torch 2.13). The groups keep their keys and values; only their type
    changes, so training is the same with or without compilation.
    """

    def __call__(self, model: torch.nn.Module) -> OptimWrapper:
        optim_wrapper = super().__call__(model)
        param_groups = optim_wrapper.optimizer.param_groups
        param_groups[:] = [dict(group) for group in param_groups]
        return optim_wrapper
