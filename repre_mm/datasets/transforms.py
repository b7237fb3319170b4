"""Image loading that names the file it cannot read, and can skip such files on request."""
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log

from mmpretrain.registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageOrSkip(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` for long runs on large, imperfect datasets.

    An unreadable or corrupt file raises ``OSError`` naming it (default), or, with
    ``skip_unreadable=True``, is logged with a running count and skipped: the transform returns
    None and the mmengine dataset draws another sample. Other arguments as LoadImageFromFile.
    """

    def __init__(self, skip_unreadable: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.skip_unreadable = skip_unreadable
        self.skipped = 0  # per process (each dataloader worker counts its own)

    def transform(self, results: dict):
        try:
            return super().transform(results)
        except Exception as error:  # mmcv raises for missing files, asserts for undecodable
            path = results.get('img_path')
            if not self.skip_unreadable:
                raise OSError(
                    f'cannot read image {path} ({type(error).__name__}: {error}). Fix or remove '
                    f'the file, or load with dict(type="LoadImageOrSkip", '
                    f'skip_unreadable=True) to skip such files.') from error
            self.skipped += 1
            print_log(f'skipped unreadable image {path} ({self.skipped} skipped so far in this '
                      f'process)', logger='current', level=30)
            return None
