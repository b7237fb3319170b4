"""AtomicCheckpointHook, the checkpoint hook of every config of ours: checkpoints and the
``last_checkpoint`` pointer written atomically (a kill mid-save leaves the previous files whole),
old checkpoints removed only after the new one is written, the modes a plain write gives. The
lock and clean-up of the temporary files: tests/test_atomic_file.py; a real run killed mid-save:
tests/test_tools.py."""
import builtins
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections import deque
from types import SimpleNamespace

import pytest
from mmengine.fileio import get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.logging import MessageHub

from repre_mm.engine import AtomicCheckpointHook, AtomicLocalBackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hook(tmp_path, hook_type=AtomicCheckpointHook, **kwargs):
    """A hook as the runner leaves it after before_train, and a runner stand-in whose
    save_checkpoint goes through mmengine's own save_checkpoint (and so the hook's backend)."""
    from mmengine.runner.checkpoint import save_checkpoint
    hook = hook_type(interval=1, **kwargs)

    def runner_save(out_dir, filename, file_client_args=None, backend_args=None, **unused):
        save_checkpoint({'w': 1}, os.path.join(out_dir, filename), file_client_args,
                        backend_args)

    runner = SimpleNamespace(work_dir=str(tmp_path), message_hub=MessageHub(f'h{id(hook)}'),
                             save_checkpoint=runner_save, logger=SimpleNamespace(
                                 info=lambda *a: None))
    hook.before_train(runner)
    return hook, runner


def test_the_hook_writes_through_the_atomic_backend_and_mmengines_does_not(tmp_path):
    hook, _ = _hook(tmp_path)
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    assert get_file_backend(str(tmp_path), backend_args=hook.backend_args).__class__ \
        is AtomicLocalBackend  # what runner.save_checkpoint is given
    plain, _ = _hook(tmp_path, CheckpointHook)
    assert type(plain.file_backend) is not AtomicLocalBackend and plain.backend_args is None


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    backend = AtomicLocalBackend()
    path = str(tmp_path / 'sub' / 'epoch_1.pth')
    backend.put(b'complete checkpoint', path)
    assert open(path, 'rb').read() == b'complete checkpoint'

    # a crash mid-save (here: fsync fails) leaves the previous file whole and no temporary file
    def crash(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='disk full'):
        backend.put(b'new checkpoint, never completed', path)
    assert open(path, 'rb').read() == b'complete checkpoint'
    assert os.listdir(tmp_path / 'sub') == ['epoch_1.pth']
    monkeypatch.undo()
    # mmengine's own LocalBackend writes in place: the same crash truncates the destination
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
    with pytest.raises(OSError):
        get_file_backend(path).put(b'abcdef', path)
    monkeypatch.setattr(builtins, 'open', real_open)
    assert open(path, 'rb').read() == b'abc'


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o002, 0o664)])
def test_atomic_writes_give_the_mode_of_a_plain_open(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        hook, runner = _hook(tmp_path)
        hook._save_checkpoint_with_step(runner, 1, meta=dict(epoch=1))  # + last_checkpoint
        AtomicLocalBackend().put_text('{}', str(tmp_path / 'dump.json'))
        with open(tmp_path / 'plain', 'w') as f:
            f.write('reference')
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(('epoch_1.pth', 'dump.json', 'last_checkpoint', 'plain'), mode)
    # an existing file keeps its own mode, as open(path, 'w') keeps it
    os.chmod(tmp_path / 'epoch_1.pth', 0o640)
    AtomicLocalBackend().put(b'checkpoint 2', str(tmp_path / 'epoch_1.pth'))
    assert stat.S_IMODE((tmp_path / 'epoch_1.pth').stat().st_mode) == 0o640


def test_only_checkpoints_and_the_pointer_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, 'fsync', lambda fd: synced.append(fd) or real_fsync(fd))
    AtomicLocalBackend().put_text('{"small": "text"}', str(tmp_path / 'dump.json'))
    assert synced == []
    hook, runner = _hook(tmp_path)
    hook._save_checkpoint_with_step(runner, 1, meta=dict(epoch=1))
    # the data before the rename, the folder after it, for the checkpoint and its pointer
    assert len(synced) == 4


def test_last_checkpoint_pointer_is_replaced_atomically(tmp_path, monkeypatch):
    pointer = tmp_path / 'last_checkpoint'
    pointer.write_text(str(tmp_path / 'epoch_1.pth'))
    hook, runner = _hook(tmp_path)
    runner.save_checkpoint = lambda *args, **kwargs: None
    real_replace = os.replace

    def fail(src, dst):  # the write of the new pointer dies before it is complete
        raise OSError('disk full')

    monkeypatch.setattr(os, 'replace', fail)
    with pytest.raises(OSError, match='disk full'):
        hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert pointer.read_text() == str(tmp_path / 'epoch_1.pth')  # the previous one, whole
    assert os.listdir(tmp_path) == ['last_checkpoint']
    monkeypatch.setattr(os, 'replace', real_replace)
    hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert pointer.read_text() == str(tmp_path / 'epoch_2.pth')


def test_a_killed_save_leaves_a_temporary_file_the_next_save_removes(tmp_path):
    path, started = str(tmp_path / 'epoch_1.pth'), str(tmp_path.parent / 'started')
    code = textwrap.dedent('''
        import os, signal, sys
        from repre_mm.engine import AtomicLocalBackend
        def killed_here(fd):  # the data is written, the rename not done
            open(sys.argv[2], 'w').close()
            signal.pause()
        os.fsync = killed_here
        AtomicLocalBackend().put(b'x' * 100000, sys.argv[1])''')
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
    AtomicLocalBackend().put(b'complete', path)
    assert os.listdir(tmp_path) == ['epoch_1.pth']
    assert open(path, 'rb').read() == b'complete'


def test_the_oldest_checkpoint_is_removed_only_after_the_new_one_is_written(tmp_path):
    (tmp_path / 'epoch_1.pth').write_bytes(b'the only good checkpoint')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))

    def killed_mid_save(out_dir, filename, *args, **kwargs):
        raise KeyboardInterrupt('killed')

    for hook_type in (CheckpointHook, AtomicCheckpointHook):
        hook, runner = _hook(tmp_path, hook_type, max_keep_ckpts=1)
        hook.keep_ckpt_ids = deque([1], maxlen=1)
        runner.save_checkpoint = killed_mid_save
        with pytest.raises(KeyboardInterrupt):
            hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
        left = sorted(os.listdir(tmp_path))
        if hook_type is CheckpointHook:
            # mmengine's own hook removed epoch_1.pth already: nothing left to resume from
            assert left == ['last_checkpoint']
            (tmp_path / 'epoch_1.pth').write_bytes(b'the only good checkpoint')
        else:
            assert left == ['epoch_1.pth', 'last_checkpoint']
            assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_1.pth')
    hook, runner = _hook(tmp_path, max_keep_ckpts=1)
    hook.keep_ckpt_ids = deque([1], maxlen=1)
    hook._save_checkpoint_with_step(runner, 2, meta=dict(epoch=2))
    assert sorted(os.listdir(tmp_path)) == ['epoch_2.pth', 'last_checkpoint']
    assert list(hook.keep_ckpt_ids) == [2]
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2]


def test_a_remote_out_dir_keeps_mmengines_backend(tmp_path):
    """Only local writes become atomic: an explicit backend stays the user's."""
    hook, _ = _hook(tmp_path, backend_args=dict(backend='local'))
    assert type(hook.file_backend) is not AtomicLocalBackend
    assert hook.backend_args == dict(backend='local')
