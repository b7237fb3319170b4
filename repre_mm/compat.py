"""Every work-around for the OpenMMLab 2023 stack on current torch / numpy, and nothing else.

Each patch says what breaks without it; ``tests/test_compat.py`` has a test per patch that fails
without it. Patches apply on ``import repre_mm`` and are idempotent. A GPU user with a matching
torch / torchvision / mmcv triggers none of the conditional ones.
"""
import importlib.util
import os
import os.path as osp
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


def mmengine_checkpoint_globals() -> list:
    """What an mmengine training checkpoint pickles besides tensors and containers, and nothing
    more: the message hub's ``HistoryBuffer`` objects, the numpy arrays they hold (float64 values,
    int64 counts: ``np.append`` keeps those dtypes) and numpy float64 scalars (the logged
    ``eta``). No ``getattr``, no object arrays, no other dtype."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
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


def patch_checkpoint_safe_load() -> bool:
    """``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine's
    ``load_from_local`` does not say otherwise, so ``--resume`` fails on every checkpoint mmengine
    itself wrote: ``Unsupported global: mmengine.logging.history_buffer.HistoryBuffer``. Besides
    that class the message hub holds numpy arrays, and HistoryBuffer pickles its built-in
    statistics functions through ``builtins.getattr``, which no safe allow-list may admit.
    So: HistoryBuffer stops pickling the built-in statistics (``__setstate__`` restores them
    anyway), and ``Runner.load_checkpoint`` (behind ``--resume`` and ``load_from``) loads inside
    :func:`mmengine_checkpoint_loading`. Loading stays ``weights_only=True``: a file with any
    other pickled object is still refused, and no other load in the process is widened."""
    if 'safe_load' in _APPLIED or not hasattr(torch.serialization, 'add_safe_globals'):
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
    _APPLIED.add('safe_load')
    return True


# --- 6. mmengine: checkpoints and the last_checkpoint pointer written in place ---------------------
# A temporary file is named .<final name>.partial-<host>-<pid>-<random>: a later write into the
# same folder removes those of dead processes of this host (a run killed mid-save).
_PARTIAL = '.partial-'
_PARTIAL_NAME = re.compile(
    r'^\..+' + re.escape(_PARTIAL) + r'(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+$')


def _umask() -> int:
    # /proc reads it without changing it; os.umask can only read it by setting it (racing threads)
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain_open_mode(path: str) -> int:
    """The permission bits ``open(path, 'w')`` leaves: an existing file keeps its own, a new one
    gets 0o666 less the umask (``mkstemp`` would give 0o600 whatever the umask)."""
    import stat
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_partial_files(folder: str) -> list:
    """Remove the temporary files that writers on this host left when they died before their
    rename (a run killed mid-save); those of live processes (a save in progress) stay."""
    import socket
    host, removed = socket.gethostname(), []
    for name in os.listdir(folder):
        match = _PARTIAL_NAME.match(name)
        if match and match['host'] == host and not _process_alive(int(match['pid'])):
            try:
                os.remove(os.path.join(folder, name))
                removed.append(name)
            except FileNotFoundError:  # another process cleaned it first
                pass
    return removed


class AtomicFile:
    """``open(path, mode)`` for writing, made atomic: the data goes to a temporary sibling, which
    replaces ``path`` when closed without an error and is removed otherwise. The file gets the
    mode a plain ``open`` would give. ``durable=True`` also fsyncs the data before the rename and
    the folder after it, so that after a power loss ``path`` is the old or the new file, whole.

    Args:
        path (str): the destination.
        mode (str): ``'w'`` or ``'wb'`` (or ``'wt'``).
        durable (bool): fsync (checkpoints). Defaults to False.
        **kwargs: passed to ``os.fdopen`` (``encoding``, ...).
    """

    def __init__(self, path, mode: str = 'wb', durable: bool = False, **kwargs):
        import socket
        import tempfile
        self.path, self.durable = os.path.abspath(os.fspath(path)), durable
        folder, name = os.path.split(self.path)
        os.makedirs(folder, exist_ok=True)
        remove_stale_partial_files(folder)
        prefix = f'.{name}{_PARTIAL}{socket.gethostname()}-{os.getpid()}-'
        fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=prefix)
        try:
            os.fchmod(fd, _plain_open_mode(self.path))
            self.file = os.fdopen(fd, mode, **kwargs)
        except BaseException:
            os.close(fd)
            os.remove(self.tmp)
            raise

    def write(self, data):
        return self.file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, traceback):
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> None:
        try:
            if self.durable:
                self.file.flush()
                os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        if self.durable:  # the rename itself survives a power loss only once the folder is synced
            fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.tmp):
            os.remove(self.tmp)


def _put(self, obj: bytes, filepath) -> None:
    # LocalBackend.put: checkpoints (save_checkpoint) and other binary dumps
    with AtomicFile(filepath, 'wb', durable=True) as f:
        f.write(obj)


def _put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
    # LocalBackend.put_text: configs, json / yaml dumps; small files, no fsync
    with AtomicFile(filepath, 'w', encoding=encoding) as f:
        f.write(obj)


def _open_writes_atomically(file, mode='r', *args, **kwargs):
    """``open`` as seen by mmengine's checkpoint_hook module, which writes the
    ``last_checkpoint`` pointer with it: writes become atomic (and durable: the pointer commits
    a checkpoint), reads stay plain."""
    import builtins
    if isinstance(file, (str, os.PathLike)) and mode in ('w', 'wt', 'wb') and not args:
        return AtomicFile(file, mode, durable=True, **kwargs)
    return builtins.open(file, mode, *args, **kwargs)


def patch_atomic_local_writes() -> bool:
    """mmengine's ``LocalBackend.put`` / ``put_text`` (behind ``save_checkpoint`` and file dumps)
    and ``CheckpointHook`` (the ``last_checkpoint`` pointer that ``--resume`` reads) open the
    destination and write into it: a run killed or a disk filled mid-save leaves a truncated
    ``epoch_N.pth`` or pointer under its final name, which a later load fails on, and the
    previous file of that name is already gone. Both now write a temporary sibling and rename it
    over the destination (:class:`AtomicFile`): a file under its final name is always whole,
    keeps the mode a plain write gives, and temporary files of killed runs are removed by the
    next write into their folder."""
    from mmengine.fileio.backends.local_backend import LocalBackend
    from mmengine.hooks import checkpoint_hook
    if 'atomic_put' in _APPLIED:
        return False
    ORIGINALS['LocalBackend.put'] = LocalBackend.put
    ORIGINALS['LocalBackend.put_text'] = LocalBackend.put_text
    LocalBackend.put, LocalBackend.put_text = _put, _put_text
    # a module global shadows the builtin for that module's code only
    checkpoint_hook.open = _open_writes_atomically
    _APPLIED.add('atomic_put')
    return True


# --- 7. mmengine: the oldest checkpoint removed before the new one exists ------------------------
def patch_remove_old_checkpoints_after_save() -> bool:
    """With ``max_keep_ckpts``, mmengine's ``CheckpointHook`` removes the oldest checkpoint
    *before* it writes the new one and the ``last_checkpoint`` pointer: with
    ``max_keep_ckpts=1`` a run killed mid-save is left with no checkpoint at all, and a pointer
    naming the removed file, so ``--resume`` fails. The removals now wait until the new
    checkpoint and the pointer are written (and do not happen if that fails)."""
    from mmengine.hooks import CheckpointHook
    if 'remove_after_save' in _APPLIED:
        return False
    save = ORIGINALS['CheckpointHook._save_checkpoint_with_step'] = \
        CheckpointHook._save_checkpoint_with_step

    def save_then_remove_old(self, runner, step, meta):
        backend, deferred = self.file_backend, []
        backend.remove = deferred.append  # an instance attribute: the method for this save only
        try:
            save(self, runner, step, meta)
        finally:
            del backend.remove
        for path in deferred:
            backend.remove(path)

    CheckpointHook._save_checkpoint_with_step = save_then_remove_old
    _APPLIED.add('remove_after_save')
    return True


# --- 8. mmengine: the `repre_mm::` config scope of an editable install -----------------------------
def _package_folder() -> str:
    return osp.dirname(osp.abspath(__file__))


def patch_editable_package_scope(installed_path=None) -> bool:
    """mmengine (0.10.7) resolves ``_base_ = 'repre_mm::...'`` through
    ``get_installed_path('repre-mm')``, which looks for the package beside its ``.dist-info``.
    ``pip install -e`` (PEP 660) leaves only the ``.dist-info`` and an import hook there, so the
    scope fails with ``FileNotFoundError: .../site-packages/repre_mm/.mim/model-index.yml``.
    Applied only where mmengine's answer holds no ``.mim`` folder: the scope is then the folder
    of the ``repre_mm`` that is imported. Any other package's lookup is unchanged, and a wheel
    install (where mmengine finds ``.mim``) is not patched."""
    if 'editable_scope' in _APPLIED:
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
    _APPLIED.add('editable_scope')
    return True


def apply_all() -> None:
    patch_torchvision_ops_schemas()
    patch_cpu_distributed_init()
    patch_mmcv_adjust_hue()
    patch_collate_fn_scope()
    patch_checkpoint_safe_load()
    patch_atomic_local_writes()
    patch_remove_old_checkpoints_after_save()
    patch_editable_package_scope()


apply_all()
