"""Atomic file writes: a file under its final name is always whole.

:class:`AtomicFile` writes into a temporary sibling, ``.<final name>.partial-<random>``, and
renames it over the destination when closed without an error (removed otherwise). The writer
holds an exclusive ``fcntl.flock`` on that temporary file for its whole life, until the rename
or the removal. :func:`remove_stale_partial_files`, which every :class:`AtomicFile` runs for its
destination first, removes only that destination's temporary files whose lock it can take at
once: a live writer holds its lock, and the kernel releases a dead writer's (a run killed
mid-save). Other files of the folder, other destinations' temporary files included, are never
touched. No process id or host name is consulted, so a reused pid (a new container, a reboot)
does not keep a leftover alive, and a leftover of another host on a shared file system is
removed by the next write of that file.

Locks are taken on descriptors open for writing: on NFS, ``flock`` is emulated with POSIX
locks, and an exclusive POSIX lock needs a file open for writing.

Limits: locks are as good as the file system's ``flock``. Where it refuses them (some Lustre or
FUSE mounts) the writer goes on without a lock and the clean-up removes nothing there. An NFS
mount with ``nolock`` keeps locks local to each client: there a clean-up on one host may remove
another host's temporary file in progress, whose save then fails (the previous file stays
whole). A process forked while a writer is open shares its lock until it exits.

:class:`repre_mm.engine.AtomicCheckpointHook` writes checkpoints and the ``last_checkpoint``
pointer through :class:`AtomicFile`; ``tests/test_atomic_file.py`` tests it.
"""
import fcntl
import os
import re
import stat
import tempfile

__all__ = ['AtomicFile', 'remove_stale_partial_files', 'PARTIAL']

PARTIAL = '.partial-'


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
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _remove_if_unlocked(path: str) -> bool:
    """Remove ``path`` if no process holds a lock on it; True when removed."""
    try:  # for writing: an exclusive POSIX lock (NFS's flock) needs it
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:  # gone (committed, or cleaned by another process), a symlink, read-only
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live writer holds it, or the file system has no locks: keep it
            return False
        try:  # the name may have been committed (renamed away) since it was listed
            same = os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
        except FileNotFoundError:
            return False
        if not same or not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.remove(path)  # while holding the lock, so that a writer that raced us sees it gone
        return True
    except FileNotFoundError:  # another clean-up removed it first
        return False
    finally:
        os.close(fd)  # releases the lock


def remove_stale_partial_files(path: str) -> list:
    """Remove the temporary files that :class:`AtomicFile` writers of ``path`` left when they
    died before their rename (a run killed mid-save): those of ``path``'s name whose lock can be
    taken without waiting. The temporary files of live writers, in this process or another,
    and every other file of the folder stay.

    Args:
        path (str): the destination whose leftovers are removed.

    Returns:
        list[str]: the names removed.
    """
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    pattern = re.compile(re.escape(f'.{name}{PARTIAL}') + r'.+')
    return sorted(entry for entry in os.listdir(folder)
                  if pattern.fullmatch(entry)
                  and _remove_if_unlocked(os.path.join(folder, entry)))


class AtomicFile:
    """``open(path, mode)`` for writing, made atomic: the data goes to a temporary sibling, which
    replaces ``path`` when closed without an error and is removed otherwise. The file gets the
    mode a plain ``open`` would give. ``durable=True`` also fsyncs the data before the rename and
    the folder after it, so that after a power loss ``path`` is the old or the new file, whole.
    The temporary file stays locked (``flock``) until it is renamed or removed, and temporary
    files left unlocked in the folder (by dead writers) are removed first.

    Args:
        path (str): the destination.
        mode (str): ``'w'`` or ``'wb'`` (or ``'wt'``).
        durable (bool): fsync (checkpoints). Defaults to False.
        **kwargs: passed to ``os.fdopen`` (``encoding``, ...).
    """

    def __init__(self, path, mode: str = 'wb', durable: bool = False, **kwargs):
        self.path, self.durable = os.path.abspath(os.fspath(path)), durable
        folder, name = os.path.split(self.path)
        os.makedirs(folder, exist_ok=True)
        remove_stale_partial_files(self.path)
        # self.fd is ours alone (the file object does not close it), so it is closed once,
        # last, whatever fails: closing it releases the lock
        self.fd = self._create_locked(folder, f'.{name}{PARTIAL}')
        try:
            os.fchmod(self.fd, _plain_open_mode(self.path))
            self.file = os.fdopen(self.fd, mode, closefd=False, **kwargs)
        except BaseException:
            os.remove(self.tmp)
            os.close(self.fd)
            raise

    def _create_locked(self, folder: str, prefix: str) -> int:
        while True:
            fd, self.tmp = tempfile.mkstemp(dir=folder, prefix=prefix)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # no locks on this file system: its clean-ups remove nothing either
                return fd
            except BaseException:
                os.remove(self.tmp)
                os.close(fd)
                raise
            # a clean-up may have locked and removed the file between its creation and our lock
            if os.fstat(fd).st_nlink > 0:
                return fd
            os.close(fd)

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
        """Rename the temporary file over the destination (then release its lock)."""
        try:
            self.file.flush()
            if self.durable:
                os.fsync(self.fd)
            os.replace(self.tmp, self.path)  # still locked: no clean-up can take it meanwhile
        except BaseException:
            self.discard()
            raise
        self.file.close()
        os.close(self.fd)
        if self.durable:  # the rename itself survives a power loss only once the folder is synced
            fd = os.open(os.path.dirname(self.path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def discard(self) -> None:
        """Remove the temporary file (then release its lock); the destination is untouched."""
        try:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)
        finally:
            try:
                self.file.close()
            except OSError:  # flushing data that is discarded anyway (a full disk)
                pass
            finally:
                os.close(self.fd)
