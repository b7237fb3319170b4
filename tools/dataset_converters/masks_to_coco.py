"""Write COCO instance annotations (for mmdet's CocoDataset) from images and mask PNGs.

    python tools/dataset_converters/masks_to_coco.py IMAGES MASKS OUT.json --classes NAME
        [--binary [--whole] | --semantic] [--min-area N] [--max-instances N] [--rle]
        [--image-root DIR] [--overwrite]

e.g. python tools/dataset_converters/masks_to_coco.py horse/train/images horse/train/masks \\
         data/horse/annotations/instances_train.json --binary --classes horse --min-area 100

Input (only read):

    IMAGES/<stem>.jpg|.jpeg|.png|.bmp|.webp   (subfolders too)
    MASKS/<stem>.png                          single-channel, the size of its image

Masks (repre_mm/datasets/coco_from_masks.py has the details):

    (default)    instance ids: 0 background, each other value one instance; one class
    --binary     0 background, 1 or 255 foreground; each 8-connected region one instance
                 (--whole: the whole foreground one instance); one class
    --semantic   0 background, k = the k-th name of --classes; each 8-connected region of a
                 class one instance of it

Output: OUT, a COCO instances file: ``images`` (ids 1..M in stem order; ``file_name`` is the
image's path relative to --image-root, by default relative to IMAGES, i.e. the bare file name
for a flat folder, so the mmdet config sets ``data_prefix=dict(img=IMAGES)``), ``annotations``
(ids 1..A; ``bbox`` [x, y, w, h] and ``area`` from the mask's pixels, ``segmentation`` polygons
or with --rle RLE, iscrowd 0), ``categories`` (ids 1..K in the order of --classes) and ``info``
(the options and what was skipped). Instances under --min-area pixels are dropped; an image
whose mask has no instance is kept without annotations (a negative) and listed at the end.

Refused before anything is written, each with the files named: an image without a mask or a
mask without an image, a mask of another size than its image, a mask value that the kind does
not allow (a --binary value other than 0/1/255, a --semantic value above the number of
classes, an instance id above --max-instances). An OUT inside IMAGES or MASKS is refused, and
an existing OUT that this tool did not write is kept unless --overwrite. The written file is
loaded back with pycocotools as a check.
"""
import argparse
import contextlib
import io
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)
from repre_mm.datasets import coco_from_masks  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('images', help='folder of the images')
    parser.add_argument('masks', help='folder of the masks, <stem>.png for each image')
    parser.add_argument('out', help='the COCO JSON to write (its folder is created)')
    parser.add_argument('--classes', nargs='+', required=True, metavar='NAME',
                        help='class names, category ids 1..K in this order (one name unless '
                             '--semantic)')
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument('--binary', action='store_true',
                      help='masks are 0 / 1 (or 0 / 255): each connected region an instance')
    kind.add_argument('--semantic', action='store_true',
                      help='mask value k is the k-th class: each connected region of a class '
                           'an instance')
    parser.add_argument('--whole', action='store_true',
                        help='with --binary: the whole foreground of a mask is one instance')
    parser.add_argument('--min-area', type=int, default=1, metavar='N',
                        help='drop instances of fewer pixels (default: 1, keep all)')
    parser.add_argument('--max-instances', type=int, metavar='N',
                        help='instance-id masks: an id above N is an error')
    parser.add_argument('--rle', action='store_true',
                        help='write RLE instead of polygons (exact, keeps holes)')
    parser.add_argument('--image-root', metavar='DIR',
                        help='write file_name relative to DIR, a folder holding IMAGES '
                             '(default: relative to IMAGES)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUT that this tool did not write')
    args = parser.parse_args(argv)
    args.mode = 'binary' if args.binary else 'semantic' if args.semantic else 'instance'
    try:
        coco_from_masks.check_options(args.classes, args.mode, args.min_area, args.whole,
                                      args.max_instances)
    except ValueError as error:
        parser.error(str(error))
    return args


def check_out(out: str, sources, overwrite: bool, description: str) -> None:
    """Refuses an OUT inside a source folder, or an existing OUT that this tool did not write
    (unless ``overwrite``)."""
    out_real = osp.realpath(out)
    for source in sources:
        if out_real.startswith(osp.realpath(source) + os.sep):
            raise ValueError(f'{out} is inside {source}: the sources are only read; write OUT '
                             f'elsewhere (e.g. <dataset>/annotations/).')
    if osp.isdir(out):
        raise IsADirectoryError(f'{out} is a folder: give the path of the JSON file to write.')
    if not osp.exists(out) or overwrite:
        return
    try:
        with open(out, encoding='utf-8') as f:
            written_here = json.load(f).get('info', {}).get('description') == description
    except (ValueError, AttributeError, UnicodeDecodeError):
        written_here = False
    if not written_here:
        raise FileExistsError(f'{out} exists and was not written by this tool: choose another '
                              f'OUT, or pass --overwrite to replace it.')


def write_json(coco: dict, out: str) -> None:
    """Writes through a temporary file: a failed write leaves no half file at OUT."""
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    partial = out + '.partial'
    try:
        with open(partial, 'w', encoding='utf-8') as f:
            json.dump(coco, f, separators=(',', ':'))
        os.replace(partial, out)
    finally:
        if osp.exists(partial):
            os.remove(partial)


def check_with_pycocotools(out: str, coco: dict) -> None:
    """Loads OUT as COCO evaluation and mmdet do, and rasterises every annotation."""
    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints its loading steps
        loaded = COCO(out)
    assert len(loaded.getImgIds()) == len(coco['images']), out
    assert len(loaded.getAnnIds()) == len(coco['annotations']), out
    for annotation in loaded.loadAnns(loaded.getAnnIds()):
        if not loaded.annToMask(annotation).any():
            raise AssertionError(f'{out}: annotation {annotation["id"]} rasterises to nothing.')


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    check_out(args.out, (args.images, args.masks), args.overwrite, coco_from_masks.DESCRIPTION)
    coco = coco_from_masks.masks_to_coco(args.images, args.masks, args.classes, mode=args.mode,
                                         min_area=args.min_area, whole=args.whole,
                                         max_instances=args.max_instances, rle=args.rle,
                                         image_root=args.image_root)
    write_json(coco, args.out)
    converted = time.perf_counter() - start
    start = time.perf_counter()
    check_with_pycocotools(args.out, coco)
    print(coco_from_masks.coco_summary(coco))
    print(f'wrote {args.out} ({osp.getsize(args.out) / 1e6:.2f} MB) in {converted:.1f} s; '
          f'pycocotools loads it ({time.perf_counter() - start:.1f} s). mmdet: '
          f'ann_file={args.out!r}, data_prefix=dict(img={args.image_root or args.images!r}), '
          f'metainfo=dict(classes={tuple(args.classes)!r})')


if __name__ == '__main__':
    main()
