"""Every work-around for the OpenMMLab 2023 stack on current torch / numpy, and nothing else.

Each patch says what breaks without it; ``tests/test_compat.py`` has a test per patch that fails
without it. Patches apply on ``import repre_mm`` and are idempotent. A GPU user with a matching
torch / torchvision / mmcv triggers none of the conditional ones.
"""
import importlib.util
import re
import sys
from pathlib import Path

import torch

_APPLIED = set()
# What each patch replaced, so that tests can show the failure it prevents.
ORIGINALS = {}
# torch.library.Library objects: a definition lives only as long as its Library object.
_LIBRARIES = []


# --- 1. torchvision: a CUDA wheel beside a CPU torch ----------------------------------------------
def _torchvision_cuda_build_on_cpu_torch() -> bool:
    """True when torchvision's compiled ops were built for CUDA but torch has none."""
    if torch.version.cuda is not None:
        return False
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return False
    version_file = Path(list(spec.submodule_search_locations)[0]) / 'version.py'
    if not version_file.exists():
        return False
    # Read, not imported: importing torchvision.version imports torchvision, which is what fails.
    match = re.search(r"__version__ = '([^']+)'", version_file.read_text())
    return bool(match) and '+cu' in match.group(1)


def patch_torchvision_ops_schemas() -> bool:
    """PyPI's torchvision 0.28 for Linux is a CUDA build; its ``_C.so`` links libtorch_cuda, so
    beside the CPU torch no operator registers and ``import torchvision`` dies in
    ``_meta_registrations.py`` (``operator torchvision::nms does not exist``). mmpretrain imports
    torchvision at module level, mmengine's Runner start-up too. Declaring the two schemas that
    file registers fakes for lets the pure-Python parts (transforms, ops.boxes) import;
    ``torchvision.ops.nms`` itself still raises (mmdet uses mmcv's compiled nms instead)."""
    if ('torchvision_schemas' in _APPLIED or 'torchvision' in sys.modules
            or not _torchvision_cuda_build_on_cpu_torch()):
        return False
    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _LIBRARIES.append(lib)
    _APPLIED.add('torchvision_schemas')
    return True


# --- 2. distributed training without CUDA ----------------------------------------------------------
def patch_cpu_distributed_init() -> bool:
    """mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` unconditionally, so
    ``--launcher pytorch`` on a machine without CUDA fails before the process group exists. On
    such a machine we init a gloo group instead (CPU DDP: tests, debugging on a laptop)."""
    if 'cpu_dist' in _APPLIED or torch.cuda.is_available():
        return False
    import mmengine.dist.utils as dist_utils

    original = ORIGINALS['_init_dist_pytorch'] = dist_utils._init_dist_pytorch

    def _init_dist_pytorch_cpu(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend='gloo', **kwargs)

    dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu
    _register_cpu_ddp_wrapper()
    _APPLIED.add('cpu_dist')
    return True


def cpu_model_wrapper_cfg(cfg) -> None:
    """mmengine wraps the model with ``device_ids=[LOCAL_RANK]``, and DDP rejects device ids for
    a CPU module as well as SyncBN layers (``SyncBatchNorm layers only work with GPU modules``);
    mmengine reverts SyncBN only outside distributed runs. Without CUDA, use the wrapper below."""
    if torch.cuda.is_available() or cfg.get('launcher', 'none') == 'none':
        return
    wrapper = cfg.get('model_wrapper_cfg') or dict()
    wrapper['type'] = 'CPUDistributedDataParallel'
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper.setdefault('broadcast_buffers', False)
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper


def _register_cpu_ddp_wrapper():
    from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
    from mmengine.registry import MODEL_WRAPPERS

    @MODEL_WRAPPERS.register_module(force=True)
    class CPUDistributedDataParallel(MMDistributedDataParallel):
        """MMDistributedDataParallel for CPU processes (gloo): SyncBN becomes per-process BN."""

        def __init__(self, module, **kwargs):
            super().__init__(module=revert_sync_batchnorm(module), **kwargs)

    return CPUDistributedDataParallel


# --- 3. numpy 2: mmcv's hue jitter -----------------------------------------------------------------
def _adjust_hue(img, hue_factor, backend=None):
    """mmcv 2.1's ``adjust_hue`` with the hue shift wrapped modulo 256 explicitly."""
    import cv2
    import mmcv.image.photometric as photometric
    import numpy as np
    from PIL import Image

    backend = backend or photometric.imread_backend
    if backend not in ('cv2', 'pillow'):
        raise ValueError(f"backend: {backend} is not supported. Supported: 'cv2', 'pillow'")
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f'hue_factor:{hue_factor} is not in [-0.5, 0.5].')
    shift = np.uint8(int(hue_factor * 255) % 256)
    if backend == 'pillow':
        pil_image = Image.fromarray(img[..., ::-1], mode='RGB')
        h, s, v = pil_image.convert('HSV').split()
        h = Image.fromarray(np.array(h, dtype=np.uint8) + shift, 'L')
        rgb = Image.merge('HSV', (h, s, v)).convert('RGB')
        return np.array(rgb, dtype=img.dtype)[..., ::-1]
    h, s, v = cv2.split(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_BGR2HSV_FULL))
    hsv = cv2.merge([h + shift, s, v])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR_FULL).astype(img.dtype)


def patch_mmcv_adjust_hue() -> bool:
    """mmcv 2.1's ``adjust_hue`` shifts the hue by ``np.uint8(hue_factor * 255)``; numpy >= 2
    refuses a negative Python int there (``OverflowError: Python integer -5 out of bounds for
    uint8``), so MoCo v3's ColorJitter (hue=0.1) crashes on about half of the images. numpy 1
    wrapped the negative shift modulo 256; the replacement does that explicitly."""
    import mmcv
    import numpy as np
    if 'adjust_hue' in _APPLIED or int(np.__version__.split('.')[0]) < 2:
        return False
    import mmcv.image
    import mmcv.image.photometric
    ORIGINALS['adjust_hue'] = mmcv.image.photometric.adjust_hue
    for module in (mmcv, mmcv.image, mmcv.image.photometric):
        module.adjust_hue = _adjust_hue
    _APPLIED.add('adjust_hue')
    return True


# --- 4. mmengine: collate functions of configs inherited across packages ----------------------------
def patch_collate_fn_scope() -> bool:
    """mmengine's Config tags every dict of a base config from another package (``_base_ =
    'mmpretrain::...'``) with ``_scope_``. ``Runner.build_dataloader`` passes every key of
    ``collate_fn`` but ``type`` to the function, so an inherited ``collate_fn=dict(type=
    'default_collate')`` fails with ``default_collate() got an unexpected keyword argument
    '_scope_'``. The key only selects a registry; collate functions live in mmengine's."""
    from mmengine.runner import Runner
    if 'collate_scope' in _APPLIED:
        return False
    build_dataloader = ORIGINALS['build_dataloader'] = Runner.build_dataloader

    def build_dataloader_without_collate_scope(dataloader, *args, **kwargs):
        if isinstance(dataloader, dict) and isinstance(dataloader.get('collate_fn'), dict):
            dataloader = dataloader.copy()
            dataloader['collate_fn'] = {
                k: v for k, v in dataloader['collate_fn'].items() if k != '_scope_'}
        return build_dataloader(dataloader, *args, **kwargs)

    Runner.build_dataloader = staticmethod(build_dataloader_without_collate_scope)
    _APPLIED.add('collate_scope')
    return True


# --- 5. torch >= 2.6: resuming mmengine checkpoints with weights_only=True ---------------------------
def _history_buffer_getstate(self) -> dict:
    # (the original __getstate__ also leaves 'statistics_methods' in the instance's __dict__)
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    custom = {k: v for k, v in self._statistics_methods.items()
              if k not in ('min', 'max', 'current', 'mean')}
    if custom:  # user-registered statistics still travel (and then need a trusted load)
        state['statistics_methods'] = custom
    return state


def patch_checkpoint_safe_load() -> bool:
    """``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine's
    ``load_from_local`` does not say otherwise, so ``--resume`` fails on every checkpoint mmengine
    itself wrote: ``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``. Besides
    that class the message hub holds numpy arrays, and HistoryBuffer pickles its built-in
    statistics functions through ``builtins.getattr``, which no safe allow-list may admit.
    So: HistoryBuffer stops pickling the built-in statistics (``__setstate__`` restores them
    anyway), and HistoryBuffer plus numpy's array reconstruction become safe globals. Loading
    stays ``weights_only=True``: a file with any other pickled object is still refused."""
    if 'safe_load' in _APPLIED or not hasattr(torch.serialization, 'add_safe_globals'):
        return False
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    ORIGINALS['HistoryBuffer.__getstate__'] = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    torch.serialization.add_safe_globals(
        [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype] +
        dtype_classes)
    _APPLIED.add('safe_load')
    return True


# --- 6. mmengine: checkpoint files written in place -------------------------------------------------
def _atomic_write(data, filepath, mode):
    import os
    import tempfile
    folder = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.' + os.path.basename(filepath) + '.')
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def patch_atomic_local_writes() -> bool:
    """mmengine's ``LocalBackend.put`` / ``put_text`` (behind ``save_checkpoint`` and the
    ``last_checkpoint`` pointer) open the destination and write into it: a run killed or a disk
    filled mid-save leaves a truncated ``epoch_N.pth`` under its final name, which
    ``--resume PATH`` or any later load then fails on, and a previous file of that name is already
    gone. Write a temporary sibling, fsync it, and rename it over the destination: a file under
    its final name is always complete."""
    from mmengine.fileio.backends.local_backend import LocalBackend
    if 'atomic_put' in _APPLIED:
        return False
    ORIGINALS['LocalBackend.put'] = LocalBackend.put
    LocalBackend.put = lambda self, obj, filepath: _atomic_write(obj, str(filepath), 'wb')
    LocalBackend.put_text = lambda self, obj, filepath, encoding='utf-8': _atomic_write(
        obj.encode(encoding), str(filepath), 'wb')
    _APPLIED.add('atomic_put')
    return True


def apply_all() -> None:
    patch_torchvision_ops_schemas()
    patch_cpu_distributed_init()
    patch_mmcv_adjust_hue()
    patch_collate_fn_scope()
    patch_checkpoint_safe_load()
    patch_atomic_local_writes()


apply_all()
