"""``init_cfg=dict(type='Pretrained', ..., strict=True)``: refuse to load half a checkpoint.

mmengine's ``Pretrained`` initializer loads with ``strict=False`` and only logs missing and
unexpected keys, so a typo in ``prefix`` or a wrong ``arch`` silently trains from a random
encoder. This subclass, registered under the same name, adds ``strict`` (default False: mmengine's
behaviour, the explicit opt-out). It keeps the type name ``'Pretrained'`` because mmpretrain's
ViT backbones re-initialise their weights after ``init_cfg`` unless its type is exactly that.
"""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import WEIGHT_INITIALIZERS

from .. import compat
from ..utils.checkpoint import load_strict, load_weights


@WEIGHT_INITIALIZERS.register_module(name='Pretrained', force=True)
class CheckedPretrainedInit(PretrainedInit):
    """mmengine's PretrainedInit plus ``strict``: with ``strict=True`` the checkpoint (its keys
    under ``prefix``, e.g. ``'backbone.'``) is loaded with ``weights_only=True`` and any missing
    or unexpected key raises a ``KeyError`` listing them."""

    def __init__(self, checkpoint, prefix=None, map_location='cpu', strict=False):
        super().__init__(checkpoint, prefix=prefix, map_location=map_location)
        self.strict = strict

    def __call__(self, module):
        if not self.strict:  # mmengine's torch.load, admitting a training checkpoint's extras
            with compat.mmengine_checkpoint_loading():
                return super().__call__(module)
        print_log(f'load {self.prefix or "all keys"} from {self.checkpoint} (strict)',
                  logger='current')
        load_strict(module, load_weights(self.checkpoint), prefix=self.prefix,
                    source=self.checkpoint)
