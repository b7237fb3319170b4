"""Every work-around for the OpenMMLab 2023 stack on current torch / numpy, and nothing else.

One module per library a patch changes: :mod:`repre_mm.compat.torchvision`,
:mod:`repre_mm.compat.mmcv`, :mod:`repre_mm.compat.mmengine`. Every patch fixes a failure, and
applies only where that failure exists in the running environment (probed where it can be: the
failing call is tried on a tiny input first). Behaviour we merely prefer is never patched in:
it is a registered component a config names (``AtomicCheckpointHook``). Each patch's docstring
says what breaks without it and the versions it was measured on; ``tests/test_compat.py`` has a
test per patch that fails without it, and one that it does nothing where the library is right;
``tests/test_guest.py`` checks that ``import repre_mm`` changes nothing else. Patches apply on
``import repre_mm`` and are idempotent. With a CUDA torch the torchvision shim and the CPU
distributed start-up do not apply; under numpy 1 the mmcv patch does not; a wheel install needs
no scope patch.
"""
from repre_mm.compat._state import ORIGINALS
from repre_mm.compat.mmcv import patch_mmcv_adjust_hue
from repre_mm.compat.mmengine import (cpu_model_wrapper_cfg, mmengine_checkpoint_globals,
                                      mmengine_checkpoint_loading, patch_checkpoint_safe_load,
                                      patch_collate_fn_scope, patch_cpu_distributed_init,
                                      patch_editable_package_scope)
from repre_mm.compat.torchvision import patch_torchvision_ops_schemas

# private names that tests and subprocess probes have used from repre_mm.compat
from repre_mm.compat._state import APPLIED as _APPLIED  # noqa: F401,I001
from repre_mm.compat.mmengine import _history_buffer_getstate, _package_folder  # noqa: F401
from repre_mm.compat.torchvision import _torchvision_cuda_build_on_cpu_torch  # noqa: F401

__all__ = [
    'ORIGINALS', 'apply_all', 'cpu_model_wrapper_cfg', 'mmengine_checkpoint_globals',
    'mmengine_checkpoint_loading', 'patch_checkpoint_safe_load', 'patch_collate_fn_scope',
    'patch_cpu_distributed_init', 'patch_editable_package_scope', 'patch_mmcv_adjust_hue',
    'patch_torchvision_ops_schemas'
]


def apply_all() -> None:
    # the torchvision patch first: the others import mmengine / mmcv, which may import it
    patch_torchvision_ops_schemas()
    patch_cpu_distributed_init()
    patch_mmcv_adjust_hue()
    patch_collate_fn_scope()
    patch_checkpoint_safe_load()
    patch_editable_package_scope()


apply_all()
