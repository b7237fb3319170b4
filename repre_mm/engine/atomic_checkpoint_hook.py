"""Checkpoints that survive a kill mid-save: ``default_hooks.checkpoint.type =
'AtomicCheckpointHook'`` (every config of ours sets it; any mmengine config may).

mmengine's ``CheckpointHook`` (0.10.7) writes ``epoch_N.pth`` and the ``last_checkpoint`` pointer
in place, and with ``max_keep_ckpts`` it removes the oldest checkpoint *before* it writes the new
one. A run killed (or a disk filled) mid-save is left with a truncated file under its final
name, which ``--resume`` then fails on; with ``max_keep_ckpts=1`` it is left with no checkpoint
at all and a pointer to a removed file. This hook writes both files through
:class:`repre_mm.utils.atomic_file.AtomicFile` (a temporary sibling renamed over the
destination) and removes old checkpoints only once the new one and the pointer are written.
The price: with ``max_keep_ckpts=N`` the disk holds N + 1 checkpoints for the length of a save.

Nothing changes for runs that do not name it: mmengine's hook and backends are left as they are.
"""
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..utils.atomic_file import AtomicFile

ATOMIC_LOCAL_BACKEND = 'repre_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` (checkpoints: fsynced) and ``put_text``
    write atomically. Registered as ``'repre_atomic_local'``; a config selects it with
    ``backend_args=dict(backend='repre_atomic_local')``."""

    def put(self, obj: bytes, filepath) -> None:
        with AtomicFile(filepath, 'wb', durable=True) as f:
            f.write(obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        with AtomicFile(filepath, 'w', encoding=encoding) as f:
            f.write(obj)


register_backend(ATOMIC_LOCAL_BACKEND, AtomicLocalBackend)


# mmengine's root registry: the hook builds under any default scope (mmpretrain, mmdet, mmseg)
@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments), with atomic local writes of checkpoints
    and of ``last_checkpoint``, and ``max_keep_ckpts`` removals after the save.

    Remote ``out_dir`` (petrel, http, ...) and explicit ``backend_args`` / ``file_client_args``
    are written as mmengine writes them; the removals still wait for the save.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self.file_client_args is None and not self.backend_args and \
                type(self.file_backend) is LocalBackend:
            self.backend_args = dict(backend=ATOMIC_LOCAL_BACKEND)  # what save_checkpoint uses
            self.file_backend = AtomicLocalBackend()

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # mmengine's method, in another order: the checkpoint, then the pointer (atomically
        # where the backend is ours), then the removal of the checkpoints no longer kept
        stale = self._update_kept_checkpoints(runner, step)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir, ckpt_filename, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():  # sharded states: only the main process writes the rest
            return
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        if isinstance(self.file_backend, AtomicLocalBackend):
            with AtomicFile(pointer, 'w', durable=True) as f:  # the pointer commits a checkpoint
                f.write(self.last_ckpt)
        else:
            with open(pointer, 'w') as f:
                f.write(self.last_ckpt)
        for path in stale:
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(path)

    def _update_kept_checkpoints(self, runner, step) -> list:
        """mmengine's ``max_keep_ckpts`` bookkeeping: ``step`` joins ``keep_ckpt_ids``; returns
        the paths of the checkpoints it pushes out (to remove on the main process, later)."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []  # (a best checkpoint may be saved at a step already counted)
        stale = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            old = self.keep_ckpt_ids.popleft()
            if is_main_process():
                stale.append(self.file_backend.join_path(self.out_dir,
                                                         self.filename_tmpl.format(old)))
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return stale
