"""Each patch of repre_mm.compat, shown failing without the patch and working with it, and each
conditional patch shown doing nothing where the library is already right."""
import io
import os
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from repre_mm import compat

ROOT = os.path.dirname(os.path.dirname(__file__))


def _python(code, **env):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def unapplied():
    """The patches' state as before any was applied; restored afterwards. Tests that apply a
    patch again restore what it replaces themselves (monkeypatch)."""
    from repre_mm.compat import _state
    applied, originals = set(_state.APPLIED), dict(_state.ORIGINALS)
    _state.APPLIED.clear()
    yield _state
    _state.APPLIED.clear()
    _state.APPLIED.update(applied)
    _state.ORIGINALS.clear()
    _state.ORIGINALS.update(originals)


def test_torchvision_imports_only_with_the_schema_patch():
    probe = _python('from repre_mm.compat.torchvision import '
                    '_torchvision_cuda_build_on_cpu_torch as f; print(f())')
    if probe.stdout.strip() != 'True':
        pytest.skip('torchvision matches torch here (a GPU install): the patch is not applied')
    bare = _python('import torchvision')
    assert bare.returncode != 0 and 'torchvision::nms' in bare.stderr
    patched = _python('''
        import repre_mm.compat
        import torchvision.transforms, torchvision.ops.boxes
        import mmpretrain.models, mmdet.models, mmseg.models
        print('ok')''')
    assert patched.returncode == 0, patched.stderr[-2000:]


def test_torchvision_patch_does_nothing_where_torchvision_matches_torch(unapplied, monkeypatch):
    from repre_mm.compat import torchvision as tv_compat
    defined = []

    class Library:  # records what the patch would declare
        def __init__(self, *args):
            pass

        def define(self, schema):
            defined.append(schema)

    monkeypatch.setattr(torch.library, 'Library', Library)
    monkeypatch.setattr(tv_compat, '_LIBRARIES', [])
    monkeypatch.delitem(sys.modules, 'torchvision')  # as before torchvision's first import
    # a CPU torchvision beside a CPU torch, a CUDA one beside a CUDA torch, none at all
    for cuda, version in ((None, '0.28.0+cpu'), ('12.8', '0.28.0+cu128'), (None, None)):
        monkeypatch.setattr(torch.version, 'cuda', cuda)
        monkeypatch.setattr(tv_compat, '_torchvision_version_on_disk', lambda: version)
        assert not tv_compat.patch_torchvision_ops_schemas()
    assert defined == [] and tv_compat._LIBRARIES == [] and not unapplied.APPLIED
    # the mismatch itself is patched (the test tells the two apart)
    monkeypatch.setattr(torch.version, 'cuda', None)
    monkeypatch.setattr(tv_compat, '_torchvision_version_on_disk', lambda: '0.28.0+cu128')
    assert tv_compat.patch_torchvision_ops_schemas() and len(defined) == 2


def test_pytorch_launcher_without_cuda_only_with_the_patch():
    if torch.cuda.is_available():
        pytest.skip('CUDA present: mmengine initialises NCCL itself')
    env = dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(20000 + os.getpid() % 10000))
    code = '''
        {}
        from mmengine.dist import init_dist, get_world_size
        init_dist('pytorch', backend='gloo')
        print('world', get_world_size())'''
    bare = _python(code.format(''), **env)
    assert bare.returncode != 0 and 'cuda' in bare.stderr.lower()
    patched = _python(code.format('import repre_mm.compat'), **env)
    assert patched.returncode == 0 and 'world 1' in patched.stdout, patched.stderr[-2000:]


def test_cpu_distributed_patch_does_nothing_where_cuda_is_available(unapplied, monkeypatch):
    import mmengine.dist.utils as dist_utils
    from mmengine.config import Config
    original = unapplied.ORIGINALS['_init_dist_pytorch']
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch', original)  # mmengine's own
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert not compat.patch_cpu_distributed_init()
    assert dist_utils._init_dist_pytorch is original and not unapplied.APPLIED
    cfg = Config(dict(launcher='pytorch'))
    compat.cpu_model_wrapper_cfg(cfg)
    assert 'model_wrapper_cfg' not in cfg  # mmengine's own DDP wrapper
    # without CUDA both apply (the test tells the two apart)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert compat.patch_cpu_distributed_init() and dist_utils._init_dist_pytorch is not original
    compat.cpu_model_wrapper_cfg(cfg)
    assert cfg.model_wrapper_cfg.type == 'CPUDistributedDataParallel'


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_adjust_hue_under_numpy2(backend):
    import mmcv
    original = compat.ORIGINALS['adjust_hue']
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(OverflowError):
        original(img, -0.1, backend=backend)
    # positive shifts: identical to mmcv's own function
    assert np.array_equal(mmcv.adjust_hue(img, 0.1, backend=backend),
                          original(img, 0.1, backend=backend))
    # negative shifts: the hue moves back by |factor| of the circle, as numpy 1 computed it
    import cv2
    out = mmcv.adjust_hue(img, -0.1, backend=backend)
    h_in = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL)[..., 0].astype(int)
    h_out = cv2.cvtColor(out, cv2.COLOR_BGR2HSV_FULL)[..., 0].astype(int)
    shift = np.median((h_out - h_in) % 256)
    assert abs(shift - (256 - 25)) <= 3


def test_adjust_hue_patch_does_nothing_under_numpy1(unapplied, monkeypatch):
    import mmcv
    import mmcv.image
    import mmcv.image.photometric
    from repre_mm.compat.mmcv import _adjust_hue
    modules, original = (mmcv, mmcv.image, mmcv.image.photometric), \
        unapplied.ORIGINALS['adjust_hue']
    for module in modules:  # mmcv's own function
        monkeypatch.setattr(module, 'adjust_hue', original)
    monkeypatch.setattr(np, '__version__', '1.26.4')
    assert not compat.patch_mmcv_adjust_hue()
    assert all(m.adjust_hue is original for m in modules) and not unapplied.APPLIED
    monkeypatch.setattr(np, '__version__', '2.4.6')  # the test tells the two apart
    assert compat.patch_mmcv_adjust_hue()
    assert all(m.adjust_hue is _adjust_hue for m in modules)


def test_collate_fn_inherited_from_another_package():
    from mmengine.runner import Runner
    loader = dict(batch_size=2, dataset=[torch.zeros(3)] * 4, sampler=dict(
        type='DefaultSampler', shuffle=False), collate_fn=dict(
            type='default_collate', _scope_='mmpretrain'))
    with pytest.raises(TypeError, match='_scope_'):
        next(iter(compat.ORIGINALS['build_dataloader'](dict(loader))))
    batch = next(iter(Runner.build_dataloader(dict(loader))))
    assert batch.shape == (2, 3)


def test_mmengine_checkpoint_state_loads_with_weights_only():
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub('compat-test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    state = dict(message_hub=hub.state_dict(), meta=dict(epoch=1))

    def save(getstate):
        HistoryBuffer.__getstate__ = getstate
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            return buf.getvalue()
        finally:
            HistoryBuffer.__getstate__ = compat._history_buffer_getstate

    unpatched = save(compat.ORIGINALS['HistoryBuffer.__getstate__'])
    with pytest.raises(Exception, match='getattr'), compat.mmengine_checkpoint_loading():
        torch.load(io.BytesIO(unpatched), weights_only=True)
    with compat.mmengine_checkpoint_loading():
        loaded = torch.load(io.BytesIO(save(compat._history_buffer_getstate)), weights_only=True)
    restored = loaded['message_hub']['log_scalars']['train/loss']
    assert restored.mean() == 1.0 and restored.current() == 0.5
    assert restored.statistics('max') == 1.5  # built-in statistics restored on load
    # only the checkpoint loads admit HistoryBuffer and numpy: any other torch.load refuses it
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(io.BytesIO(save(compat._history_buffer_getstate)), weights_only=True)


def test_safe_load_patch_does_nothing_on_torch_without_safe_globals(unapplied, monkeypatch):
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import Runner
    getstate = unapplied.ORIGINALS['HistoryBuffer.__getstate__']
    load = unapplied.ORIGINALS['Runner.load_checkpoint']
    monkeypatch.setattr(HistoryBuffer, '__getstate__', getstate)  # mmengine's own
    monkeypatch.setattr(Runner, 'load_checkpoint', load)
    add_safe_globals = torch.serialization.add_safe_globals
    monkeypatch.delattr(torch.serialization, 'add_safe_globals')  # torch < 2.4
    assert not compat.patch_checkpoint_safe_load()
    assert HistoryBuffer.__getstate__ is getstate and Runner.load_checkpoint is load
    assert not unapplied.APPLIED
    monkeypatch.setattr(torch.serialization, 'add_safe_globals', add_safe_globals, raising=False)
    assert compat.patch_checkpoint_safe_load()  # the test tells the two apart
    assert HistoryBuffer.__getstate__ is not getstate and Runner.load_checkpoint is not load


def test_runner_checkpoint_loads_admit_the_message_hub_and_nothing_else(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner import Runner
    assert Runner.load_checkpoint is not compat.ORIGINALS['Runner.load_checkpoint']
    hub = MessageHub('compat-test-2')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('eta', np.float64(3.0))
    good = dict(meta=dict(epoch=1), state_dict={'w': torch.ones(1)}, message_hub=hub.state_dict())
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(good, path)
    # exactly what mmengine's checkpoints hold: the list is sufficient, and refused elsewhere
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    allowed = {f'{g.__module__}.{g.__qualname__}' for g in compat.mmengine_checkpoint_globals()}
    assert unsafe and unsafe <= allowed
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(path, weights_only=True)
    from mmengine.runner.checkpoint import _load_checkpoint  # what Runner.load_checkpoint calls
    with compat.mmengine_checkpoint_loading():
        assert _load_checkpoint(path, 'cpu')['message_hub']['runtime_info']['eta'] == 3.0
    # our weight loading admits the same, and refuses the same
    from repre_mm.utils.checkpoint import load_weights
    torch.save(good, path)
    assert set(load_weights(path)) == {'w'}
    for evil in (io.StringIO, print, np.dtypes.ObjectDType):  # code, builtins, other dtypes
        torch.save(dict(good, extra=evil), path)
        with pytest.raises(Exception, match='Unsupported global'):
            load_weights(path)
        with pytest.raises(Exception, match='Unsupported global'), \
                compat.mmengine_checkpoint_loading():
            _load_checkpoint(path, 'cpu')


def test_unknown_pickled_objects_are_still_refused():
    buf = io.BytesIO()
    torch.save({'x': io.StringIO}, buf)
    with pytest.raises(Exception, match='Unsupported global'), \
            compat.mmengine_checkpoint_loading():
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    from mmengine.fileio import put
    path = str(tmp_path / 'sub' / 'epoch_1.pth')
    put(b'complete checkpoint', path)
    assert open(path, 'rb').read() == b'complete checkpoint'

    # a crash mid-save (here: fsync fails) leaves the previous file whole and no temporary file
    def crash(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='disk full'):
        put(b'new checkpoint, never completed', path)
    assert open(path, 'rb').read() == b'complete checkpoint'
    assert os.listdir(tmp_path / 'sub') == ['epoch_1.pth']
    # mmengine's own put writes in place: the same crash truncates the destination
    import builtins
    real_open = builtins.open

    class Truncating:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:3])
            raise OSError('disk full')

    monkeypatch.setattr(builtins, 'open', lambda p, m='r', *a, **k: Truncating(real_open(p, m))
                        if 'w' in m else real_open(p, m, *a, **k))
    from mmengine.fileio.backends.local_backend import LocalBackend
    with pytest.raises(OSError):
        compat.ORIGINALS['LocalBackend.put'](LocalBackend(), b'abcdef', path)
    monkeypatch.setattr(builtins, 'open', real_open)
    assert open(path, 'rb').read() == b'abc'


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_give_the_mode_of_a_plain_open(tmp_path, umask, mode):
    from mmengine.fileio import put, put_text
    from mmengine.hooks import checkpoint_hook
    previous = os.umask(umask)
    try:
        put(b'checkpoint', str(tmp_path / 'epoch_1.pth'))
        put_text('{}', str(tmp_path / 'dump.json'))
        with checkpoint_hook.open(str(tmp_path / 'last_checkpoint'), 'w') as f:  # the pointer
            f.write('epoch_1.pth')
        with open(tmp_path / 'plain', 'w') as f:
            f.write('reference')
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(('epoch_1.pth', 'dump.json', 'last_checkpoint', 'plain'), mode)
    # an existing file keeps its own mode, as open(path, 'w') keeps it
    os.chmod(tmp_path / 'epoch_1.pth', 0o640)
    put(b'checkpoint 2', str(tmp_path / 'epoch_1.pth'))
    assert stat.S_IMODE((tmp_path / 'epoch_1.pth').stat().st_mode) == 0o640


def test_only_checkpoints_and_the_pointer_are_fsynced(tmp_path, monkeypatch):
    from mmengine.fileio import put, put_text
    from mmengine.hooks import checkpoint_hook
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd) or real_fsync(fd))
    put_text('{"small": "text"}', str(tmp_path / 'dump.json'))
    assert synced == []
    put(b'checkpoint', str(tmp_path / 'epoch_1.pth'))
    assert len(synced) == 2  # the data before the rename, the folder after it
    with checkpoint_hook.open(str(tmp_path / 'last_checkpoint'), 'w') as f:
        f.write(str(tmp_path / 'epoch_1.pth'))
    assert len(synced) == 4  # the pointer commits the checkpoint: as durable


def test_last_checkpoint_pointer_is_replaced_atomically(tmp_path, monkeypatch):
    from types import SimpleNamespace
    from mmengine.fileio import get_file_backend
    from mmengine.hooks import CheckpointHook
    from mmengine.logging import MessageHub
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text(str(tmp_path / 'epoch_1.pth'))
    hook = CheckpointHook(interval=1)
    hook.out_dir, hook.file_backend = str(tmp_path), get_file_backend(str(tmp_path))
    runner = SimpleNamespace(work_dir=str(tmp_path), message_hub=MessageHub('pointer-test'),
                             save_checkpoint=lambda *args, **kwargs: None)

    def fail(src, dst):  # the write of the new pointer dies before it is complete
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', fail)
    with pytest.raises(OSError, match='disk full'):
        hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert pointer.read_text() == str(tmp_path / 'epoch_1.pth')  # the previous one, whole
    assert os.listdir(tmp_path) == ['last_checkpoint']
    monkeypatch.undo()
    hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert pointer.read_text() == str(tmp_path / 'epoch_2.pth')


def test_a_killed_save_leaves_a_temporary_file_the_next_save_removes(tmp_path):
    import time
    path, started = str(tmp_path / 'epoch_1.pth'), str(tmp_path.parent / 'started')
    code = textwrap.dedent('''
        import os, signal, sys
        import repre_mm.compat
        from mmengine.fileio import put
        def killed_here(fd):  # the data is written, the rename not done
            open(sys.argv[2], 'w').close()
            signal.pause()
        os.fsync = killed_here
        put(b'x' * 100000, sys.argv[1])''')
    writer = subprocess.Popen([sys.executable, '-c', code, path, started], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + 120
    while not os.path.exists(started) and writer.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(started), 'the writer never reached its fsync'
    writer.kill()
    writer.wait()
    [stale] = os.listdir(tmp_path)
    assert stale.startswith('.epoch_1.pth.partial-') and not os.path.exists(path)
    # (a live writer's temporary file stays: tests/test_atomic_file.py)
    from mmengine.fileio import put
    put(b'complete', path)
    assert os.listdir(tmp_path) == ['epoch_1.pth']
    assert open(path, 'rb').read() == b'complete'


def test_the_oldest_checkpoint_is_removed_only_after_the_new_one_is_written(tmp_path):
    from collections import deque
    from types import SimpleNamespace
    from mmengine.fileio import get_file_backend
    from mmengine.hooks import CheckpointHook
    from mmengine.logging import MessageHub
    (tmp_path / 'epoch_1.pth').write_bytes(b'the only good checkpoint')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    hook = CheckpointHook(interval=1, max_keep_ckpts=1)
    hook.out_dir, hook.file_backend = str(tmp_path), get_file_backend(str(tmp_path))
    hook.keep_ckpt_ids = deque([1], maxlen=1)

    def killed_mid_save(out_dir, filename, *args, **kwargs):
        raise KeyboardInterrupt('killed')

    runner = SimpleNamespace(work_dir=str(tmp_path), message_hub=MessageHub('keep-test'),
                             save_checkpoint=killed_mid_save)
    with pytest.raises(KeyboardInterrupt):
        hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    # mmengine alone would have removed epoch_1.pth already: nothing left to resume from
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'last_checkpoint']
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_1.pth')

    runner.save_checkpoint = lambda out_dir, filename, *a, **k: open(
        os.path.join(out_dir, filename), 'wb').close()
    hook.keep_ckpt_ids = deque([1], maxlen=1)
    hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth', 'last_checkpoint']
    assert hasattr(type(hook.file_backend), 'remove') and 'remove' not in vars(hook.file_backend)


def test_editable_scope_patch_applies_only_where_mmengine_misses_the_configs(
        tmp_path, unapplied, monkeypatch):
    """``repre_mm::`` under ``pip install -e``: mmengine looks beside the .dist-info and finds no
    .mim folder; the patch then resolves the scope to the imported package. Where mmengine
    finds .mim (a wheel install), nothing is patched."""
    import mmengine.config.config as mmengine_config

    import repre_mm
    lookup = mmengine_config.get_installed_path
    monkeypatch.setattr(mmengine_config, 'get_installed_path', lookup)
    wheel = tmp_path / 'site-packages' / 'repre_mm'
    (wheel / '.mim').mkdir(parents=True)
    # what import repre_mm replaced in this checkout (a clone not installed: this very patch)
    originals = dict(unapplied.ORIGINALS)
    assert not compat.patch_editable_package_scope(lambda package: str(wheel))
    assert not unapplied.APPLIED and unapplied.ORIGINALS == originals
    assert mmengine_config.get_installed_path is lookup

    def editable(package):  # only the .dist-info is in site-packages
        return str(tmp_path / 'site-packages' / 'missing')

    monkeypatch.setattr(mmengine_config, 'get_installed_path', editable)
    assert compat.patch_editable_package_scope(editable)
    assert mmengine_config.get_installed_path('repre-mm') == compat._package_folder()
    assert compat._package_folder() == os.path.dirname(repre_mm.__file__)
    assert mmengine_config.get_installed_path('mmpretrain') == editable('mmpretrain')
