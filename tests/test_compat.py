"""Each patch of repre_mm.compat, shown failing without the patch and working with it."""
import io
import os
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


def test_torchvision_imports_only_with_the_schema_patch():
    probe = _python('from repre_mm.compat import _torchvision_cuda_build_on_cpu_torch as f; '
                    'print(f())')
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
    with pytest.raises(Exception, match='getattr'):
        torch.load(io.BytesIO(unpatched), weights_only=True)
    loaded = torch.load(io.BytesIO(save(compat._history_buffer_getstate)), weights_only=True)
    restored = loaded['message_hub']['log_scalars']['train/loss']
    assert restored.mean() == 1.0 and restored.current() == 0.5
    assert restored.statistics('max') == 1.5  # built-in statistics restored on load


def test_unknown_pickled_objects_are_still_refused():
    buf = io.BytesIO()
    torch.save({'x': io.StringIO}, buf)
    with pytest.raises(Exception, match='Unsupported global'):
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
