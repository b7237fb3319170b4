"""COCO instance annotations from a folder of images and a folder of mask PNGs.

    IMAGES/<stem>.jpg|.jpeg|.png|.bmp|.webp     (subfolders too: <sub>/<stem>.jpg)
    MASKS/<stem>.png                            (same stem, same size; single-channel)

Three kinds of mask (``mode``):

- ``'instance'`` (default): 0 is background, every other value one instance id; an id is one
  instance however many pieces it has. One class only (a mask holds no class).
- ``'binary'``: 0 is background, 1 (or 255) foreground; every 8-connected foreground region is
  one instance of the single class, or (``whole=True``) the whole foreground is one instance.
- ``'semantic'``: 0 is background, k (1..K) class k of ``classes``; every 8-connected region of a
  class is one instance of it.

An instance smaller than ``min_area`` pixels is dropped. Its annotation has ``area`` = its pixel
count and ``bbox`` = the box of its pixels (``[x, y, w, h]``, exact); its segmentation is a
polygon list (the default) or an RLE (``rle=True``: exact, holes kept). The polygons follow the
pixel borders, so pycocotools rasterises them back to the mask, except for holes, which a COCO
polygon cannot hold (they are filled).

A mistake is found here, before a detector reads the file: an image without a mask or a mask
without an image, a mask of another size than its image, or a mask value that its kind does not
allow, each with the file named. A mask without any instance is no mistake: its image is kept
without annotations, a negative for the detector. Pure numpy / cv2 / pycocotools: no mmdet.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .seg_folder import (_label_histogram, _listing, decoded_image_size, pair_images_by_stem,
                         png_shape_problem, read_label)

MODES = ('instance', 'binary', 'semantic')
BINARY_VALUES = (0, 1, 255)
# Written into the JSON's ``info``: marks a file this module wrote (a rerun may replace it).
DESCRIPTION = 'COCO instances from masks (repre_mm.datasets.coco_from_masks)'
# Tracing the mask at twice its resolution puts the polygon on the pixel borders (a trace of
# the pixels themselves runs through the centres of the border pixels and loses half a pixel
# all round); the simplification then drops staircase points within a quarter pixel.
_TRACE_SCALE = 2
_SIMPLIFY_EPSILON = 0.5  # in traced (doubled) pixels


def check_options(classes: Sequence[str], mode: str = 'instance', min_area: int = 1,
                  whole: bool = False, max_instances: Optional[int] = None) -> None:
    """Raises ValueError on options that do not fit together (see :func:`masks_to_coco`)."""
    if mode not in MODES:
        raise ValueError(f'mode is {mode!r}; choose one of {", ".join(MODES)}.')
    if not classes:
        raise ValueError('no class names: name the class(es) of the masks (--classes).')
    repeated = sorted({c for c in classes if list(classes).count(c) > 1})
    if repeated:
        raise ValueError(f'the class names repeat {_listing(repeated)}: give each class its '
                         f'own name.')
    if mode == 'instance' and len(classes) > 1:
        raise ValueError(
            f'{len(classes)} classes ({_listing(list(classes))}) given for instance-id masks, '
            f'which hold no class: to take the class from the mask value, use semantic masks '
            f'(--semantic: value k = class k, each connected region one instance), or convert '
            f'each class separately.')
    if mode == 'binary' and len(classes) > 1:
        raise ValueError(f'{len(classes)} classes given for binary masks, which have one '
                         f'(foreground): name one class, or use --semantic masks.')
    if whole and mode != 'binary':
        raise ValueError('whole (--whole) makes the foreground of a binary mask one instance: '
                         'use it with --binary only.')
    if max_instances is not None and (mode != 'instance' or max_instances < 1):
        raise ValueError(f'max_instances (--max-instances) is {max_instances}: it bounds the '
                         f'ids of instance-id masks, so give a positive number and no '
                         f'--binary / --semantic.')
    if min_area < 1:
        raise ValueError(f'min_area (--min-area) is {min_area}: give at least 1 (pixels).')


def bad_mask_values(mask: np.ndarray, mode: str = 'instance', num_classes: int = 1,
                    max_instances: Optional[int] = None) -> str:
    """What is wrong with a mask's values for its kind, or '' when nothing is.

    Args:
        mask (np.ndarray): An H x W mask.
        mode (str): ``'instance'``, ``'binary'`` or ``'semantic'``.
        num_classes (int): The classes a semantic mask may name (values 1..num_classes).
        max_instances (int, optional): The largest id an instance mask may hold; any when None.

    Returns:
        str: A phrase that follows the mask's name (``'has value(s) 7; ...'``), or ''.
    """
    values, _ = _label_histogram(mask)
    if mode == 'binary':
        bad = values[~np.isin(values, BINARY_VALUES)]
        allowed = 'binary masks hold 0 (background) and 1 or 255 (foreground) only'
        fix = 'threshold the mask, or use instance-id or --semantic masks'
    elif mode == 'semantic':
        bad = values[values > num_classes]
        allowed = f'semantic masks hold 0 (background) and the class ids 1-{num_classes}'
        fix = 'map the value to its class id (or to 0), or name its class too'
    elif max_instances is not None:
        bad = values[values > max_instances]
        allowed = f'instance masks hold ids up to {max_instances} (--max-instances)'
        fix = 'correct the mask, or raise --max-instances'
    else:
        return ''
    if not bad.size:
        return ''
    return f'has value(s) {_listing(bad.tolist())}; {allowed}: {fix}'


def instances_from_mask(mask: np.ndarray, mode: str = 'instance', num_classes: int = 1,
                        min_area: int = 1, whole: bool = False,
                        max_instances: Optional[int] = None
                        ) -> Tuple[List[Tuple[int, np.ndarray]], int]:
    """The instances of one mask.

    Args:
        mask (np.ndarray): An H x W mask (any integer type).
        mode (str): ``'instance'`` (value = instance id), ``'binary'`` (0/1 or 0/255:
            connected regions) or ``'semantic'`` (value = class id 1..num_classes: connected
            regions of each class). Defaults to ``'instance'``.
        num_classes (int): The classes of a semantic mask. Defaults to 1.
        min_area (int): Instances smaller than this (pixels) are dropped. Defaults to 1.
        whole (bool): Binary masks only: the whole foreground is one instance. Defaults to
            False.
        max_instances (int, optional): Instance masks only: the largest id allowed.

    Returns:
        Tuple[List[Tuple[int, np.ndarray]], int]: The instances as (class id from 1, H x W
        bool mask), in class then instance-id (or region) order; and the number of instances
        dropped for being smaller than ``min_area``.
    """
    import cv2
    problem = bad_mask_values(mask, mode, num_classes, max_instances)
    if problem:
        raise ValueError(f'the mask {problem}.')
    candidates = []  # (class id, bool mask)
    if mode == 'instance':
        values, _ = _label_histogram(mask)
        candidates = [(1, mask == value) for value in values if value != 0]
    elif mode == 'binary' and whole:
        foreground = mask != 0
        candidates = [(1, foreground)] if foreground.any() else []
    else:
        class_ids = [1] if mode == 'binary' else range(1, num_classes + 1)
        for class_id in class_ids:
            region = (mask != 0) if mode == 'binary' else (mask == class_id)
            if not region.any():
                continue
            count, regions = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
            candidates += [(class_id, regions == label) for label in range(1, count)]
    instances = [(c, m) for c, m in candidates if int(m.sum()) >= min_area]
    return instances, len(candidates) - len(instances)


def mask_bbox(instance: np.ndarray) -> List[int]:
    """``[x, y, w, h]`` of the box around an instance's pixels (what pycocotools' ``toBbox``
    gives for its RLE)."""
    ys, xs = np.nonzero(instance.any(axis=1))[0], np.nonzero(instance.any(axis=0))[0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def encode_rle(instance: np.ndarray) -> dict:
    """COCO's compressed RLE of an instance (``counts`` as a str, so that it fits JSON)."""
    from pycocotools import mask as mask_util
    rle = mask_util.encode(np.asfortranarray(instance.astype(np.uint8)))
    return dict(size=[int(s) for s in rle['size']], counts=rle['counts'].decode('ascii'))


def polygons_from_mask(instance: np.ndarray) -> List[List[float]]:
    """COCO polygons (``[x1, y1, x2, y2, ...]`` each) along the outer borders of an instance's
    pieces; holes are filled (a COCO polygon cannot hold them). Contours of fewer than 3
    points are dropped, so the list may be empty."""
    import cv2
    traced = np.kron(instance.astype(np.uint8), np.ones((_TRACE_SCALE, _TRACE_SCALE), np.uint8))
    contours, _ = cv2.findContours(traced, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        contour = cv2.approxPolyDP(contour, _SIMPLIFY_EPSILON, True).reshape(-1, 2)
        if len(contour) < 3:
            continue
        # A traced point is the centre of a half-pixel cell: +0.5 then /2 puts it a quarter
        # pixel outside the border pixels' centres, which pycocotools then counts as inside.
        points = (contour + 0.5) / _TRACE_SCALE
        polygons.append([round(float(v), 2) for v in points.ravel()])
    return polygons


def instance_annotation(instance: np.ndarray, rle: bool = False) -> dict:
    """``segmentation``, ``area`` and ``bbox`` of an instance: polygons (RLE when ``rle``, or
    when no polygon of 3 points is left), the pixel count, the pixel box."""
    segmentation = None if rle else polygons_from_mask(instance)
    return dict(segmentation=segmentation or encode_rle(instance), area=int(instance.sum()),
                bbox=mask_bbox(instance))


def list_image_mask_pairs(images_dir: str, masks_dir: str) -> List[Tuple[str, str, str]]:
    """(stem, image path, mask path) of every image and its ``<stem>.png`` mask, sorted by
    stem; raises when an image has no mask or a mask no image (naming them), before any file
    is read.

    Args:
        images_dir (str): The images (.jpg, .jpeg, .png, .bmp, .webp; subfolders too).
        masks_dir (str): The masks (.png), at the images' relative paths.

    Returns:
        List[Tuple[str, str, str]]: One (stem, image path, mask path) an image.
    """
    for folder, what in ((images_dir, 'images'), (masks_dir, 'masks')):
        if not osp.isdir(folder):
            raise FileNotFoundError(f'{folder} is not a folder: give the folder of the {what}.')
    if osp.realpath(images_dir) == osp.realpath(masks_dir):
        raise ValueError(f'{images_dir} is given as both the images and the masks: keep the '
                         f'masks (<stem>.png) in a folder of their own.')
    return pair_images_by_stem(images_dir, masks_dir, what='mask',
                               add_note='an empty mask for an image without objects')


def masks_to_coco(images_dir: str, masks_dir: str, classes: Sequence[str],
                  mode: str = 'instance', min_area: int = 1, whole: bool = False,
                  max_instances: Optional[int] = None, rle: bool = False,
                  image_root: Optional[str] = None) -> dict:
    """The COCO instances dict of a folder of images and a folder of masks.

    Every mask is checked before the dict is built; a problem raises with every file that
    has it named (at most 5 listed). Images are read for their size only (header, with the
    EXIF rotation that cv2 applies on decoding).

    Args:
        images_dir (str): The images.
        masks_dir (str): The masks, ``<stem>.png`` for ``<stem>.jpg`` etc.
        classes (Sequence[str]): Class names; category ids 1..K in this order. One for
            instance and binary masks.
        mode (str): ``'instance'``, ``'binary'`` or ``'semantic'`` (see the module's
            docstring). Defaults to ``'instance'``.
        min_area (int): Instances smaller than this (pixels) are dropped. Defaults to 1.
        whole (bool): Binary masks: the whole foreground is one instance. Defaults to False.
        max_instances (int, optional): Instance masks: an id above it is an error.
        rle (bool): Write RLE instead of polygons. Defaults to False.
        image_root (str, optional): ``file_name`` is the image's path relative to this folder
            (the dataset's ``data_prefix``), which must hold ``images_dir``. Defaults to
            ``images_dir`` itself (the bare file name for a flat folder).

    Returns:
        dict: ``images`` (ids 1..M in stem order), ``annotations`` (ids 1..A),
        ``categories`` and ``info`` (the options, ``masks_without_instance``: the masks that
        gave no annotation, ``instances_under_min_area``, ``rle_fallbacks``: polygon
        annotations written as RLE because no polygon was left).
    """
    check_options(classes, mode, min_area, whole, max_instances)
    image_root = images_dir if image_root is None else image_root
    check_image_root(images_dir, image_root)
    per_image, under_min_area = read_checked_masks(
        list_image_mask_pairs(images_dir, masks_dir), mode, len(classes), min_area, whole,
        max_instances)
    images, annotations, empty_masks, rle_fallbacks = images_and_annotations(
        per_image, image_root, masks_dir, rle)
    info = dict(description=DESCRIPTION, images_dir=images_dir, masks_dir=masks_dir,
                mode=mode, whole=whole, min_area=min_area, max_instances=max_instances,
                segmentation='rle' if rle else 'polygons', masks_without_instance=empty_masks,
                instances_under_min_area=under_min_area, rle_fallbacks=rle_fallbacks)
    categories = [dict(id=i, name=name, supercategory=name) for i, name in enumerate(classes, 1)]
    return dict(info=info, images=images, annotations=annotations, categories=categories)


def check_image_root(images_dir: str, image_root: str) -> None:
    """Refuses an image root that does not hold ``images_dir`` (file_name is relative to it)."""
    # Compared as written, not resolved: file_name is osp.relpath of the same strings, and a
    # dataset folder of symlinks (as the converters make) must be accepted.
    root_abs = osp.abspath(image_root)
    if not (osp.abspath(images_dir) + osp.sep).startswith(root_abs.rstrip(osp.sep) + osp.sep):
        raise ValueError(f'{images_dir} is not inside the image root {image_root}: file_name '
                         f'is written relative to it, so give a folder that holds the images.')


def read_checked_masks(pairs, mode: str, num_classes: int, min_area: int, whole: bool,
                       max_instances: Optional[int]) -> tuple:
    """([(image path, (w, h), mask path, instances)], instances under min_area) of
    :func:`list_image_mask_pairs`' pairs; every mask is read and checked first, and the
    problems raise together, a kind at a time, naming the files."""
    not_single_channel, wrong_size, bad_values = [], [], []
    per_image = []
    under_min_area = 0
    for _, image_path, mask_path in pairs:
        width, height = decoded_image_size(image_path)
        mask = read_label(mask_path)
        if mask.dtype == bool:  # a 1-bit PNG
            mask = mask.astype(np.uint8)
        kind, problem = png_shape_problem(mask, mask_path, image_path, (width, height))
        if kind:
            (not_single_channel if kind == 'channels' else wrong_size).append(problem)
            continue
        problem = bad_mask_values(mask, mode, num_classes, max_instances)
        if problem:
            bad_values.append(f'{mask_path} {problem}')
            continue
        instances, dropped = instances_from_mask(mask, mode, num_classes, min_area, whole,
                                                 max_instances)
        under_min_area += dropped
        per_image.append((image_path, (width, height), mask_path, instances))
    if not_single_channel:
        raise ValueError(
            f'{len(not_single_channel)} mask(s) are not single-channel: '
            f'{_listing(not_single_channel)}. Save each mask as a single-channel (grey or '
            f'palette) PNG of its values.')
    if wrong_size:
        raise ValueError(f'{len(wrong_size)} mask(s) differ in size (w x h) from their image: '
                         f'{_listing(wrong_size)}. Write each mask at its image\'s size '
                         f'(resize with nearest-neighbour, never interpolate mask values).')
    if bad_values:
        # The first file's own message says what its kind allows and the fix.
        raise ValueError(f'{len(bad_values)} mask(s) hold values their kind does not allow: '
                         f'{_listing(bad_values)}.')
    return per_image, under_min_area


def images_and_annotations(per_image, image_root: str, masks_dir: str, rle: bool) -> tuple:
    """(images, annotations, masks without an instance, RLE fallbacks) of
    :func:`read_checked_masks`' images, ids from 1 in their order."""
    images, annotations, empty_masks = [], [], []
    rle_fallbacks = 0
    for image_id, (image_path, (width, height), mask_path, instances) in enumerate(
            per_image, 1):
        images.append(dict(id=image_id, file_name=osp.relpath(image_path, image_root),
                           width=width, height=height))
        if not instances:
            empty_masks.append(osp.relpath(mask_path, masks_dir))
        for class_id, instance in instances:
            annotation = instance_annotation(instance, rle)
            rle_fallbacks += int(not rle and isinstance(annotation['segmentation'], dict))
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=class_id, iscrowd=0, **annotation))
    return images, annotations, empty_masks, rle_fallbacks


def coco_summary(coco: dict) -> str:
    """A few lines for a log: images, instances a class, what was dropped or skipped."""
    info = coco.get('info', {})
    per_class: Dict[int, int] = {c['id']: 0 for c in coco['categories']}
    for annotation in coco['annotations']:
        per_class[annotation['category_id']] += 1
    counts = ', '.join(f'{c["name"]} {per_class[c["id"]]}' for c in coco['categories'])
    kind = info.get('mode', '?') + (' (whole foreground)' if info.get('whole') else '')
    lines = [f'{len(coco["images"])} images, {len(coco["annotations"])} instances ({counts}); '
             f'{kind} masks, {info.get("segmentation", "?")}']
    dropped = info.get('instances_under_min_area', 0)
    if dropped:
        lines.append(f'{dropped} instance(s) under --min-area {info.get("min_area")} pixels '
                     f'dropped')
    if info.get('rle_fallbacks'):
        lines.append(f'{info["rle_fallbacks"]} instance(s) left no polygon of 3 points: '
                     f'written as RLE')
    empty = info.get('masks_without_instance', [])
    if empty:
        lines.append(f'warning: {len(empty)} mask(s) had no instance, their images are kept '
                     f'without annotations: {_listing(empty)}')
    return '\n'.join(lines)
