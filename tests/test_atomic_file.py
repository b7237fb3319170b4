"""repre_mm.utils.atomic_file: a writer holds a lock on its temporary file for the file's whole
life, and a clean-up removes only the temporary files of its destination whose lock it can take
(dead writers'). (Its use for checkpoints: tests/test_atomic_checkpoint_hook.py.)"""
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, 'repre_mm', 'utils', 'atomic_file.py')


def _partial_files(folder):
    return sorted(name for name in os.listdir(folder) if '.partial-' in name)


def _locked(path) -> bool:
    import fcntl
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _start_writer(tmp_path, then: str, **popen):
    """A second process that opens an AtomicFile for ``tmp_path/epoch_1.pth``, writes half of a
    checkpoint, signals that it is ready, then runs ``then`` (the module alone: fast).
    Returns the process once it is ready."""
    ready = tmp_path.parent / f'{tmp_path.name}-ready'
    writer = subprocess.Popen([sys.executable, '-c', textwrap.dedent('''
        import importlib.util, signal, sys
        spec = importlib.util.spec_from_file_location('atomic_file', sys.argv[1])
        atomic_file = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(atomic_file)
        f = atomic_file.AtomicFile(sys.argv[2], 'wb')
        f.write(b'half of a checkpoint')
        f.file.flush()
        open(sys.argv[3], 'w').close()
        ''') + then, MODULE, str(tmp_path / 'epoch_1.pth'), str(ready)], **popen)
    deadline = time.time() + 60
    while not ready.exists() and writer.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert ready.exists(), 'the writer never started'
    return writer


def test_a_live_writers_temporary_file_survives_the_next_writers_clean_up(tmp_path):
    from repre_mm.utils.atomic_file import AtomicFile, remove_stale_partial_files
    # a second process writes epoch_1.pth and stops before its commit
    writer = _start_writer(tmp_path, 'sys.stdin.read()  # until the test closes our stdin\n'
                           'f.commit()\n', stdin=subprocess.PIPE)
    try:
        [live] = _partial_files(tmp_path)
        assert live.startswith('.epoch_1.pth.partial-') and _locked(tmp_path / live)
        # the next writer into the folder (here, in this process) leaves it alone, and so
        # does a clean-up of that very destination
        with AtomicFile(tmp_path / 'epoch_2.pth', 'wb') as f:
            f.write(b'checkpoint 2')
        assert remove_stale_partial_files(str(tmp_path / 'epoch_1.pth')) == []
        assert _partial_files(tmp_path) == [live]
        assert (tmp_path / live).read_bytes() == b'half of a checkpoint'
        writer.stdin.close()  # the live writer then commits its file
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'epoch_2.pth']
    assert (tmp_path / 'epoch_1.pth').read_bytes() == b'half of a checkpoint'


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    from repre_mm.utils.atomic_file import AtomicFile
    writer = _start_writer(tmp_path, 'signal.pause()\n')
    writer.send_signal(signal.SIGKILL)  # the kernel releases its lock
    writer.wait()
    [stale] = _partial_files(tmp_path)
    assert not _locked(tmp_path / stale)
    with AtomicFile(tmp_path / 'epoch_2.pth', 'wb') as f:  # another destination: not touched
        f.write(b'checkpoint 2')
    assert _partial_files(tmp_path) == [stale]
    with AtomicFile(tmp_path / 'epoch_1.pth', 'wb') as f:  # the same one (a resumed run)
        f.write(b'checkpoint 1')
    assert sorted(os.listdir(tmp_path)) == ['epoch_1.pth', 'epoch_2.pth']


def test_a_dead_writers_leftover_is_removed_whatever_pid_or_host_its_name_carries(tmp_path):
    """No pid or host judgement: an unlocked temporary file is a dead writer's, even when its
    name carries a live pid (pids are reused: a new container, a reboot) or another host (a
    shared file system). Only the temporary files of the destination written are removed."""
    from repre_mm.utils.atomic_file import AtomicFile
    host = socket.gethostname()
    leftovers = [f'.epoch_1.pth.partial-{host}-{os.getpid()}-abcd1234',  # this live process
                 f'.epoch_1.pth.partial-{host}-1-efgh5678',  # pid 1: alive
                 '.epoch_1.pth.partial-another-host-4242-ijkl9012',
                 '.epoch_1.pth.partial-mnop3456']
    # not temporary files, or another destination's: they stay
    others = ['.hidden', 'epoch_0.pth', '.notes.partial', '.epoch_2.pth.partial-abcd1234',
              '.epoch_1.pth.partial-', 'epoch_1.pth.partial-abcd1234']
    for name in leftovers + others:
        (tmp_path / name).write_bytes(b'left over')
    (tmp_path / '.dir.partial-qrst').mkdir()  # nor are folders or links
    os.symlink(tmp_path / 'epoch_0.pth', tmp_path / '.link.partial-uvwx')
    with AtomicFile(tmp_path / 'epoch_1.pth', 'wb') as f:
        f.write(b'complete')
    assert sorted(os.listdir(tmp_path)) == sorted(
        others + ['epoch_1.pth', '.dir.partial-qrst', '.link.partial-uvwx'])
    assert (tmp_path / 'epoch_1.pth').read_bytes() == b'complete'


def test_the_temporary_file_is_locked_until_its_rename_or_removal(tmp_path, monkeypatch):
    from repre_mm.utils import atomic_file
    seen, real_replace, real_remove = [], os.replace, os.remove

    def replace(src, dst):
        seen.append(('replace', _locked(src)))
        real_replace(src, dst)

    def remove(path):
        seen.append(('remove', _locked(path)))
        real_remove(path)

    monkeypatch.setattr(os, 'replace', replace)
    monkeypatch.setattr(os, 'remove', remove)
    with atomic_file.AtomicFile(tmp_path / 'a.pth', 'wb', durable=True) as f:
        f.write(b'a')
    with pytest.raises(ValueError):
        with atomic_file.AtomicFile(tmp_path / 'b.pth', 'wb') as f:
            raise ValueError('failed mid-write')
    assert seen == [('replace', True), ('remove', True)]
    assert os.listdir(tmp_path) == ['a.pth'] and not _locked(tmp_path / 'a.pth')


def test_a_writer_whose_new_file_a_clean_up_removed_before_its_lock_starts_again(
        tmp_path, monkeypatch):
    """The window between the temporary file's creation and its lock: a clean-up in another
    process may lock and remove the file then. The writer sees it gone and creates another."""
    import tempfile

    from repre_mm.utils import atomic_file
    real_mkstemp, created = tempfile.mkstemp, []

    def mkstemp_then_a_concurrent_clean_up(**kwargs):
        fd, path = real_mkstemp(**kwargs)
        created.append(path)
        if len(created) == 1:
            assert atomic_file.remove_stale_partial_files(str(tmp_path / 'epoch_1.pth')) == [
                os.path.basename(path)]
        return fd, path

    monkeypatch.setattr(tempfile, 'mkstemp', mkstemp_then_a_concurrent_clean_up)
    with atomic_file.AtomicFile(tmp_path / 'epoch_1.pth', 'wb') as f:
        f.write(b'whole')
    assert len(created) == 2 and os.listdir(tmp_path) == ['epoch_1.pth']
    assert (tmp_path / 'epoch_1.pth').read_bytes() == b'whole'


def test_without_file_locks_writes_stay_atomic_and_nothing_is_removed(tmp_path, monkeypatch):
    """A file system that refuses flock (some Lustre / FUSE mounts): the writer goes on
    unlocked, and the clean-up, unable to lock anything either, removes nothing."""
    import errno

    from repre_mm.utils import atomic_file

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, 'No locks available')

    (tmp_path / '.epoch_1.pth.partial-abcd1234').write_bytes(b'whose? unknown')
    monkeypatch.setattr(atomic_file.fcntl, 'flock', no_locks)
    with atomic_file.AtomicFile(tmp_path / 'epoch_1.pth', 'wb') as f:
        f.write(b'whole')
    assert sorted(os.listdir(tmp_path)) == ['.epoch_1.pth.partial-abcd1234', 'epoch_1.pth']
    assert (tmp_path / 'epoch_1.pth').read_bytes() == b'whole'


def test_the_clean_up_works_where_flock_is_a_posix_lock(tmp_path, monkeypatch):
    """On NFS, flock is emulated with POSIX locks (fcntl.lockf), and an exclusive POSIX lock
    needs a file open for writing: a clean-up that opens leftovers read-only removes nothing
    there. Here flock behaves so (EBADF on a read-only descriptor)."""
    import errno
    import fcntl

    from repre_mm.utils import atomic_file
    real_flock = fcntl.flock

    def nfs_flock(fd, operation):
        if operation & fcntl.LOCK_EX and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == \
                os.O_RDONLY:
            raise OSError(errno.EBADF, 'Bad file descriptor')
        return real_flock(fd, operation)

    (tmp_path / '.epoch_1.pth.partial-abcd1234').write_bytes(b'a killed save')
    monkeypatch.setattr(atomic_file.fcntl, 'flock', nfs_flock)
    with atomic_file.AtomicFile(tmp_path / 'epoch_1.pth', 'wb') as f:
        f.write(b'whole')
    assert os.listdir(tmp_path) == ['epoch_1.pth']


def test_a_failed_open_closes_the_descriptor_once_and_raises_its_own_error(tmp_path, monkeypatch):
    """os.fdopen failing (here: an unknown encoding) must surface as itself: a second close of
    the descriptor would raise EBADF instead, or close a descriptor another thread just got."""
    from repre_mm.utils import atomic_file
    closed, real_close = [], os.close
    monkeypatch.setattr(os, 'close', lambda fd: closed.append(fd) or real_close(fd))
    with pytest.raises(LookupError, match='no-such-encoding'):
        atomic_file.AtomicFile(tmp_path / 'dump.json', 'w', encoding='no-such-encoding')
    assert len(closed) == len(set(closed)) == 1
    assert os.listdir(tmp_path) == []
    closed.clear()
    with atomic_file.AtomicFile(tmp_path / 'a.json', 'w') as f:  # one close on commit too
        f.write('{}')
    assert len(closed) == 1  # the temporary file's descriptor (not durable: no folder fsync)
