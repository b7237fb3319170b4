"""mmseg's dataset for a segmentation folder in the custom layout (repre_mm.datasets.seg_folder):

    data_root/img_dir/<split>/<stem>.jpg|.png|...,  data_root/ann_dir/<split>/<stem>.png,
    data_root/classes.txt (and optionally palette.txt)

A config names only the folder and the split; classes and palette come from the folder::

    dataset=dict(type='SegFolderDataset', data_root='data/camvid_mmseg', split='train',
                 pipeline=train_pipeline)

Imported only where mmseg is installed (``repre_mm.downstream``).
"""
import os.path as osp
from typing import List, Optional

from mmengine.fileio import list_from_file
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from repre_mm.datasets.seg_folder import (ANN_DIR, IGNORE_INDEX, IMG_DIR, LABEL_EXTENSION,
                                          list_seg_pairs, read_classes, read_palette)

# The layout fixes these (class ids from 0, 255 = ignore, PNG labels, any image extension).
_FIXED_ARGS = ('reduce_zero_label', 'seg_map_suffix', 'ignore_index', 'img_suffix', 'data_prefix')


@DATASETS.register_module()
class SegFolderDataset(BaseSegDataset):
    """The pairs ``img_dir/<split>/<stem>.*`` / ``ann_dir/<split>/<stem>.png`` of ``data_root``.

    Unlike BaseSegDataset with an ``img_suffix``, a split may mix image extensions, and an
    image without its label (or a label without its image) fails at construction with the
    file's name. Label values are class ids as stored (``reduce_zero_label=False``), 255 is
    ignored. Run ``repre_mm.datasets.check_seg_folder`` once to also check every label's size
    and values.

    Args:
        data_root (str): The dataset folder (holds img_dir, ann_dir, classes.txt).
        split (str): The subfolder of img_dir / ann_dir: ``train``, ``val`` or ``test``.
            Defaults to ``'train'``.
        metainfo (dict, optional): ``classes`` (and ``palette``) to use instead of
            ``data_root/classes.txt`` (and ``palette.txt``). Defaults to None.
        ann_file (str): Optional file of stems, one a line (relative to ``data_root``), to keep
            only those samples, in that order (mmseg's ``ann_file``). Defaults to ``''``.
        **kwargs: The other arguments of :class:`BaseSegDataset` (``pipeline``,
            ``test_mode``, ``indices``, ``serialize_data``, ``lazy_init``, ...).
    """

    def __init__(self, data_root: str, split: str = 'train', metainfo: Optional[dict] = None,
                 ann_file: str = '', **kwargs) -> None:
        fixed = [key for key in _FIXED_ARGS if key in kwargs]
        if fixed:
            raise TypeError(
                f'SegFolderDataset sets {", ".join(fixed)} itself (data_prefix from split: '
                f'{IMG_DIR}/<split>, {ANN_DIR}/<split>; labels are .png class ids with '
                f'{IGNORE_INDEX} = ignore): remove {", ".join(fixed)} from the dataset config '
                f'(an inherited one with `_delete_=True`).')
        self.split = split
        if metainfo is None:
            classes = read_classes(data_root)
            metainfo = dict(classes=tuple(classes))
            palette = read_palette(data_root, len(classes))
            if palette is not None:
                metainfo['palette'] = [list(colour) for colour in palette]
        super().__init__(
            data_root=data_root, metainfo=metainfo, ann_file=ann_file,
            data_prefix=dict(img_path=osp.join(IMG_DIR, split),
                             seg_map_path=osp.join(ANN_DIR, split)),
            img_suffix='', seg_map_suffix=LABEL_EXTENSION, ignore_index=IGNORE_INDEX,
            reduce_zero_label=False, **kwargs)

    def load_data_list(self) -> List[dict]:
        """One dict a sample, with what LoadAnnotations and IoUMetric read: ``img_path``,
        ``seg_map_path``, ``label_map``, ``reduce_zero_label`` and ``seg_fields``."""
        pairs = list_seg_pairs(self.data_root, self.split)
        if self.ann_file:
            by_stem = {osp.splitext(osp.relpath(label, self.data_prefix['seg_map_path']))[0]:
                       (image, label) for image, label in pairs}
            stems = [line.strip() for line in list_from_file(self.ann_file) if line.strip()]
            unknown = [stem for stem in stems if stem not in by_stem]
            if unknown:
                raise FileNotFoundError(
                    f'{self.ann_file} lists {len(unknown)} stem(s) without an image/label pair '
                    f'in {self.data_prefix["img_path"]}: {", ".join(unknown[:5])}'
                    f'{" ..." if len(unknown) > 5 else ""}. A line is a file name without '
                    f'extension (e.g. "0001TP_006690"): fix the list or add the files.')
            pairs = [by_stem[stem] for stem in stems]
        return [
            dict(img_path=image, seg_map_path=label, label_map=self.label_map,
                 reduce_zero_label=self.reduce_zero_label, seg_fields=[])
            for image, label in pairs
        ]
