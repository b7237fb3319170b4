"""mmengine: distributed start-up without CUDA, collate functions of inherited configs, resuming
under torch's ``weights_only`` default, the ``repre_mm::`` scope of an editable install. Each
applies only where its failure exists (probed where it can be).

(This module is ``repre_mm.compat.mmengine``; ``import mmengine...`` here is mmengine itself,
imports being absolute.)
"""
import os.path as osp

import torch

from repre_mm.compat._state import APPLIED, ORIGINALS


# --- distributed training without CUDA ------------------------------------------------------------
def patch_cpu_distributed_init() -> bool:
    """mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` unconditionally, so
    ``--launcher pytorch`` on a machine without CUDA fails before the process group exists. On
    such a machine we init a gloo group instead (CPU DDP: tests, debugging on a laptop).

    Applies only where ``torch.cuda.is_available()`` is False; with CUDA mmengine is left alone
    (``tests/test_compat.py``). Measured on mmengine 0.10.7 with torch 2.13.0+cpu."""
    if 'cpu_dist' in APPLIED or torch.cuda.is_available():
        return False
    import mmengine.dist.utils as dist_utils

    original = ORIGINALS['_init_dist_pytorch'] = dist_utils._init_dist_pytorch

    def _init_dist_pytorch_cpu(backend, init_backend='torch', **kwargs):
        if torch.cuda.is_available():
            return original(backend, init_backend=init_backend, **kwargs)
        torch.distributed.init_process_group(backend='gloo', **kwargs)

    dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu
    _register_cpu_ddp_wrapper()
    APPLIED.add('cpu_dist')
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


# --- collate functions of configs inherited across packages ------------------------------------
def _collate_scope_fails(build_dataloader) -> bool:
    """The failure itself: a ``collate_fn`` that carries ``_scope_`` is refused. (Objects,
    not registry names: a registry lookup would log, and create mmengine's logger on import.)"""
    from mmengine.dataset import default_collate
    loader = dict(batch_size=1, dataset=[0], sampler=[0],
                  collate_fn=dict(type=default_collate, _scope_='mmengine'))
    try:
        next(iter(build_dataloader(loader)))
    except TypeError as error:
        return '_scope_' in str(error)
    return False


def patch_collate_fn_scope() -> bool:
    """mmengine's Config tags every dict of a base config from another package (``_base_ =
    'mmpretrain::...'``) with ``_scope_``. ``Runner.build_dataloader`` passes every key of
    ``collate_fn`` but ``type`` to the function, so an inherited ``collate_fn=dict(type=
    'default_collate')`` fails with ``default_collate() got an unexpected keyword argument
    '_scope_'``. The key only selects a registry; collate functions live in mmengine's.

    Applies only where mmengine's ``build_dataloader`` raises that error (probed on a
    one-sample list). Only the ``_scope_`` key is removed; every other dataloader reaches
    mmengine unchanged. Measured on mmengine 0.10.7 (its latest release) with mmpretrain 1.2.0."""
    from mmengine.runner import Runner
    if 'collate_scope' in APPLIED or not _collate_scope_fails(Runner.build_dataloader):
        return False
    build_dataloader = ORIGINALS['build_dataloader'] = Runner.build_dataloader

    def build_dataloader_without_collate_scope(dataloader, *args, **kwargs):
        if isinstance(dataloader, dict) and isinstance(dataloader.get('collate_fn'), dict):
            dataloader = dataloader.copy()
            dataloader['collate_fn'] = {
                k: v for k, v in dataloader['collate_fn'].items() if k != '_scope_'}
        return build_dataloader(dataloader, *args, **kwargs)

    Runner.build_dataloader = staticmethod(build_dataloader_without_collate_scope)
    APPLIED.add('collate_scope')
    return True


# --- torch >= 2.6: resuming mmengine checkpoints with weights_only=True -------------------------
def _history_buffer_getstate(self) -> dict:
    # (the original __getstate__ also leaves 'statistics_methods' in the instance's __dict__)
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    custom = {k: v for k, v in self._statistics_methods.items()
              if k not in ('min', 'max', 'current', 'mean')}
    if custom:  # user-registered statistics still travel (and then need a trusted load)
        state['statistics_methods'] = custom
    return state


def mmengine_checkpoint_globals() -> list:
    """What an mmengine training checkpoint pickles besides tensors and containers, and nothing
    more: the message hub's ``HistoryBuffer`` objects, the numpy arrays they hold (float64 values,
    int64 counts: ``np.append`` keeps those dtypes) and numpy float64 scalars (the logged
    ``eta``). No ``getattr``, no object arrays, no other dtype."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    # (numpy 1.26 has a numpy._core stub too, without multiarray: ask the version)
    if int(np.__version__.split('.')[0]) >= 2:
        from numpy._core import multiarray
    else:
        from numpy.core import multiarray
    # numpy >= 1.25 builds dtypes as instances of these classes; older ones have none
    dtype_classes = [getattr(np.dtypes, n) for n in ('Float64DType', 'Int64DType')
                     if hasattr(getattr(np, 'dtypes', None), n)]
    return [HistoryBuffer, multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype
            ] + dtype_classes


def mmengine_checkpoint_loading():
    """A context in which ``torch.load(..., weights_only=True)`` also admits
    :func:`mmengine_checkpoint_globals`. Only the loads of training checkpoints enter it (see
    :func:`patch_checkpoint_safe_load`); every other ``torch.load`` in the process keeps torch's
    own allow-list. torch < 2.5 has no scoped allow-list: there this admits nothing more (torch
    < 2.6 loads mmengine's checkpoints with ``weights_only=False`` anyway; only an explicit
    ``weights_only=True`` load of a training checkpoint, e.g. ``load_weights``, then refuses its
    message hub; not tested here, the test environment has torch 2.13)."""
    import contextlib
    if not hasattr(torch.serialization, 'safe_globals'):
        return contextlib.nullcontext()
    return torch.serialization.safe_globals(mmengine_checkpoint_globals())


def _history_buffer_load_fails() -> bool:
    """The failure itself: ``torch.load`` as mmengine's ``load_from_local`` calls it, on a
    pickled ``HistoryBuffer``."""
    import io

    from mmengine.logging.history_buffer import HistoryBuffer
    buffer = io.BytesIO()
    torch.save(HistoryBuffer(), buffer)
    buffer.seek(0)
    try:
        torch.load(buffer, map_location='cpu')
    except Exception:  # pickle.UnpicklingError: Unsupported global ... HistoryBuffer
        return True
    return False


def patch_checkpoint_safe_load() -> bool:
    """``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine's
    ``load_from_local`` does not say otherwise, so ``--resume`` fails on every checkpoint mmengine
    itself wrote: ``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``. Besides
    that class the message hub holds numpy arrays, and HistoryBuffer pickles its built-in
    statistics functions through ``builtins.getattr``, which no safe allow-list may admit.
    So: HistoryBuffer stops pickling the built-in statistics (``__setstate__`` restores them
    anyway), and ``Runner.load_checkpoint`` (behind ``--resume`` and ``load_from``) loads inside
    :func:`mmengine_checkpoint_loading`. Loading stays ``weights_only=True``: a file with any
    other pickled object is still refused, and no other load in the process is widened.

    Applies only where ``torch.load`` as mmengine calls it (no ``weights_only``) refuses a
    pickled ``HistoryBuffer`` (torch >= 2.6, unless ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set)
    and torch has the scoped allow-list; elsewhere mmengine is left alone
    (``tests/test_compat.py``). Measured on torch 2.13.0 with mmengine 0.10.7."""
    if ('safe_load' in APPLIED or not hasattr(torch.serialization, 'safe_globals')
            or not _history_buffer_load_fails()):
        return False
    import functools

    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import Runner

    ORIGINALS['HistoryBuffer.__getstate__'] = HistoryBuffer.__getstate__
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    load_checkpoint = ORIGINALS['Runner.load_checkpoint'] = Runner.load_checkpoint

    @functools.wraps(load_checkpoint)
    def load_checkpoint_with_mmengine_globals(self, *args, **kwargs):
        with mmengine_checkpoint_loading():
            return load_checkpoint(self, *args, **kwargs)

    Runner.load_checkpoint = load_checkpoint_with_mmengine_globals
    APPLIED.add('safe_load')
    return True


# --- the `repre_mm::` config scope of an editable install ---------------------------------------
def _package_folder() -> str:
    """The folder of the imported ``repre_mm`` package (this file is repre_mm/compat/...)."""
    return osp.dirname(osp.dirname(osp.abspath(__file__)))


def patch_editable_package_scope(installed_path=None) -> bool:
    """mmengine (0.10.7) resolves ``_base_ = 'repre_mm::...'`` through
    ``get_installed_path('repre-mm')``, which looks for the package beside its ``.dist-info``.
    ``pip install -e`` (PEP 660) leaves only the ``.dist-info`` and an import hook there, so the
    scope fails with ``FileNotFoundError: .../site-packages/repre_mm/.mim/model-index.yml``.
    Applies only where mmengine's answer holds no ``.mim`` folder: the scope is then the folder
    of the ``repre_mm`` that is imported. Any other package's lookup is unchanged, and a wheel
    install (where mmengine finds ``.mim``) is not patched (``tests/test_compat.py``).
    Measured on mmengine 0.10.7 with setuptools 81 (``pip install -e``)."""
    if 'editable_scope' in APPLIED:
        return False
    import mmengine.config.config as mmengine_config
    lookup = installed_path or mmengine_config.get_installed_path
    try:
        found = osp.isdir(osp.join(lookup('repre-mm'), '.mim'))
    except Exception:  # not installed at all: PYTHONPATH use
        found = False
    if found:
        return False
    original = ORIGINALS['get_installed_path'] = mmengine_config.get_installed_path

    def get_installed_path(package: str) -> str:
        return _package_folder() if package == 'repre-mm' else original(package)

    mmengine_config.get_installed_path = get_installed_path
    APPLIED.add('editable_scope')
    return True
