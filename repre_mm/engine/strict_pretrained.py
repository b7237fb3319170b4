"""``init_cfg=dict(type='Pretrained', ..., strict=True)``: refuse to load half a checkpoint.

mmengine's ``Pretrained`` initializer loads with ``strict=False`` and only logs missing and
unexpected keys, so a typo in ``prefix`` or a wrong ``arch`` silently trains from a random
encoder. This subclass, registered under the same name, adds ``strict`` (default False: mmengine's
behaviour, the explicit opt-out; without ``strict=True`` it is mmengine's class, unchanged).

Why it replaces mmengine's ``'Pretrained'`` (``force=True``) instead of taking a name of its own:
mmpretrain's ViT backbones re-initialise their weights after ``init_cfg`` unless its type is
exactly ``'Pretrained'``, so a strict initializer under any other name would load the encoder and
then have it overwritten. This is the one entry of another library's registry that
``import repre_mm`` replaces (``tests/test_guest.py``).
"""
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit
from mmengine.registry import WEIGHT_INITIALIZERS

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
        if not self.strict:
            return super().__call__(module)
        print_log(f'load {self.prefix or "all keys"} from {self.checkpoint} (strict)',
                  logger='current')
        load_strict(module, load_weights(self.checkpoint), prefix=self.prefix,
                    source=self.checkpoint)
