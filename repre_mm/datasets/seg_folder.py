"""A semantic-segmentation folder in mmseg's documented custom layout, checked once.

    ROOT/img_dir/{train,val,test}/<stem>.jpg|.jpeg|.png|...   (val is optional)
    ROOT/ann_dir/{train,val,test}/<stem>.png                  (one class id a pixel, 255 = ignore)
    ROOT/classes.txt                                          (one class name a line; line i = id i)
    ROOT/palette.txt                                          (optional: one ``R G B`` line a class)

mmseg finds a mistake in such a folder late (a missing label as a file error inside a data
loader worker, a class id beyond the head as a CUDA assert, a label of the wrong size as a shape
error in the loss) or never (a JPEG label or a 16-bit label silently read as other ids). This
module names the file and the fix before a run starts, and records the image sizes a benchmark
needs to choose its crop. Pure numpy / PIL: it does not import mmseg.
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .image_folder import IMAGE_EXTENSIONS

IGNORE_INDEX = 255
LABEL_EXTENSION = '.png'
# The layout's fixed folder names (mmseg's tutorial on custom datasets).
IMG_DIR, ANN_DIR = 'img_dir', 'ann_dir'
# EXIF orientations that rotate by 90 degrees: cv2 (mmseg's LoadImageFromFile) applies them on
# decoding, so the decoded image is h x w while its header says w x h.
_EXIF_ORIENTATION_TAG = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_MAX_LISTED = 5


def _listing(names: Sequence[str]) -> str:
    """At most 5 names, then how many more."""
    shown = ', '.join(str(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f' (and {more} more)' if more > 0 else '')


def _read_lines(path: str) -> List[str]:
    """Stripped lines of a text file, trailing blank lines dropped."""
    with open(path, encoding='utf-8') as f:
        lines = [line.strip() for line in f.read().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def read_classes(root: str) -> List[str]:
    """Class names of ``root/classes.txt``: line i (from 0) names class id i.

    Args:
        root (str): The dataset folder.

    Returns:
        List[str]: The class names, in id order.
    """
    path = osp.join(root, 'classes.txt')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{path} is missing: write the class names there, one a line (line 1 names '
            f'class id 0, line 2 id 1, ...).')
    classes = _read_lines(path)
    if not classes:
        raise ValueError(f'{path} is empty: write the class names there, one a line (line 1 '
                         f'names class id 0, line 2 id 1, ...).')
    blank = [i + 1 for i, name in enumerate(classes) if not name]
    if blank:
        raise ValueError(f'{path} has blank line(s) {_listing(blank)} between class names: a '
                         f'line is a class id, so name every class or remove the line(s).')
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise ValueError(f'{path} names {_listing(repeated)} more than once: give each class '
                         f'id its own name.')
    if len(classes) > IGNORE_INDEX:
        raise ValueError(
            f'{path} lists {len(classes)} classes; at most {IGNORE_INDEX} fit (ids 0-254: '
            f'{IGNORE_INDEX} means ignore and mmseg reads labels as uint8). Merge classes.')
    return classes


def read_palette(root: str, num_classes: int) -> Optional[List[Tuple[int, int, int]]]:
    """The colours of ``root/palette.txt`` (one ``R G B`` line a class, in id order), or None
    when the file is absent (mmseg then draws a random palette).

    Args:
        root (str): The dataset folder.
        num_classes (int): Lines the palette must have (the classes of classes.txt).

    Returns:
        Optional[List[Tuple[int, int, int]]]: One RGB colour a class, or None.
    """
    path = osp.join(root, 'palette.txt')
    if not osp.isfile(path):
        return None
    lines = _read_lines(path)
    if len(lines) != num_classes:
        raise ValueError(f'{path} has {len(lines)} colour lines but classes.txt has '
                         f'{num_classes} classes: write one "R G B" line a class, in the order '
                         f'of classes.txt (or delete palette.txt for a random palette).')
    palette = []
    for number, line in enumerate(lines, 1):
        values = line.replace(',', ' ').split()
        try:
            colour = tuple(int(v) for v in values)
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise ValueError(f'{path} line {number} is "{line}": a colour is three integers '
                             f'0-255, "R G B" (e.g. "128 64 128").')
        palette.append(colour)
    return palette


def _existing_splits(root: str) -> str:
    found = []
    for sub in (IMG_DIR, ANN_DIR):
        folder = osp.join(root, sub)
        names = sorted(d for d in os.listdir(folder)
                       if osp.isdir(osp.join(folder, d))) if osp.isdir(folder) else None
        found.append(f'{sub}: {names}' if names is not None else f'no {sub}')
    return '; '.join(found)


def _files_by_stem(folder: str, extensions: Tuple[str, ...]) -> Dict[str, List[str]]:
    """{path relative to folder without extension: [file names relative to folder]} of the
    files with one of ``extensions`` (any case), in subfolders too (as mmseg lists them)."""
    by_stem: Dict[str, List[str]] = {}
    for dirpath, _, filenames in os.walk(folder, followlinks=True):
        relative_dir = osp.relpath(dirpath, folder)
        for name in filenames:
            if osp.splitext(name)[1].lower() in extensions:
                relative = name if relative_dir == '.' else osp.join(relative_dir, name)
                by_stem.setdefault(osp.splitext(relative)[0], []).append(relative)
    return by_stem


def pair_images_by_stem(image_dir: str, png_dir: str, what: str = 'label',
                        no_images_fix: str = '', add_note: str = '',
                        other_format_fix: Optional[str] = None) -> List[Tuple[str, str, str]]:
    """(stem, image path, PNG path) of every image in ``image_dir`` and the ``<stem>.png`` of
    ``png_dir`` at its relative path, sorted by stem; raises, naming the files, when the images
    are none, a stem has two images, an image has no PNG or a PNG no image. No file is read.

    Args:
        image_dir (str): The images (any of ``IMAGE_EXTENSIONS``; subfolders too).
        png_dir (str): Their PNGs (labels, masks), at the images' relative paths.
        what (str): What a PNG is, for the messages (``'label'``, ``'mask'``). Defaults to
            ``'label'``.
        no_images_fix (str): What to do when ``image_dir`` holds no image (e.g. ``'put the
            train images there'``); '' says only that it holds none. Defaults to ''.
        add_note (str): Said in brackets after "Add their <what>s" when images have no PNG
            (e.g. ``'an empty mask for an image without objects'``). Defaults to ''.
        other_format_fix (str, optional): When given, ``png_dir`` is searched for the missing
            stems in another image format and, if one is there, this fix is said (e.g.
            ``'write the class ids again as .png'``). Defaults to None (not searched).

    Returns:
        List[Tuple[str, str, str]]: One (stem, image path, PNG path) an image; a stem is the
        path relative to ``image_dir`` without its extension.
    """
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    pngs = _files_by_stem(png_dir, (LABEL_EXTENSION, ))
    if not images:
        fix = f': {no_images_fix}' if no_images_fix else ''
        raise FileNotFoundError(f'{image_dir} holds no images ({"/".join(IMAGE_EXTENSIONS)})'
                                f'{fix}.')
    duplicated = sorted(' + '.join(sorted(names)) for names in images.values() if len(names) > 1)
    if duplicated:
        raise ValueError(f'{image_dir} has {len(duplicated)} stem(s) with two images: '
                         f'{_listing(duplicated)}. An image and its {what} share the stem: keep '
                         f'one image a stem (rename or delete the other).')
    without_png = sorted(images[s][0] for s in images.keys() - pngs.keys())
    if without_png:
        hint = ''
        if other_format_fix is not None:
            # A PNG saved in another format is the usual cause: say so (JPEG is lossy).
            other = _files_by_stem(png_dir, tuple(e for e in IMAGE_EXTENSIONS
                                                  if e != LABEL_EXTENSION))
            wrong_format = sorted(other[osp.splitext(n)[0]][0] for n in without_png
                                  if osp.splitext(n)[0] in other)
            if wrong_format:
                hint = (f' {png_dir} has {_listing(wrong_format)} instead: {what}s must be '
                        f'lossless PNG ({other_format_fix}).')
        note = f' ({add_note})' if add_note else ''
        raise FileNotFoundError(
            f'{len(without_png)} image(s) in {image_dir} have no {what} <stem>.png in '
            f'{png_dir}: {_listing(without_png)}. Add their {what}s{note} or remove the '
            f'images.{hint}')
    orphans = sorted(pngs[s][0] for s in pngs.keys() - images.keys())
    if orphans:
        raise FileNotFoundError(
            f'{len(orphans)} {what}(s) in {png_dir} have no image of the same stem in '
            f'{image_dir}: {_listing(orphans)}. Add their images or remove the {what}s.')
    return [(stem, osp.join(image_dir, images[stem][0]), osp.join(png_dir, pngs[stem][0]))
            for stem in sorted(images)]


def list_seg_pairs(root: str, split: str) -> List[Tuple[str, str]]:
    """(image path, label path) pairs of ``root/img_dir/<split>`` and ``root/ann_dir/<split>``,
    sorted by stem; an image and its label share the stem (``a.jpg`` -> ``a.png``).

    Args:
        root (str): The dataset folder.
        split (str): ``train``, ``val`` or ``test`` (any subfolder name).

    Returns:
        List[Tuple[str, str]]: One (image path, label path) a sample.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root} is not a folder; a segmentation folder has '
                                f'{IMG_DIR}/<split>/*.jpg, {ANN_DIR}/<split>/*.png and '
                                f'classes.txt.')
    img_dir, ann_dir = osp.join(root, IMG_DIR, split), osp.join(root, ANN_DIR, split)
    for folder in (img_dir, ann_dir):
        if not osp.isdir(folder):
            raise FileNotFoundError(
                f'{folder} is missing (found {_existing_splits(root)}). A segmentation folder '
                f'needs {IMG_DIR}/train + {ANN_DIR}/train and {IMG_DIR}/test + {ANN_DIR}/test; '
                f'val is optional. Create the folder or choose an existing split.')
    pairs = pair_images_by_stem(img_dir, ann_dir, what='label',
                                no_images_fix=f'put the {split} images there',
                                other_format_fix='write the class ids again as .png')
    return [(image_path, label_path) for _, image_path, label_path in pairs]


def decoded_image_size(path: str) -> Tuple[int, int]:
    """(w, h) of an image as cv2 decodes it, from its header only: the EXIF orientation that
    cv2 applies (and PIL's ``size`` does not) can swap the sides."""
    from PIL import Image
    with Image.open(path) as image:
        width, height = image.size
        # JPEG and WebP carry EXIF in the header (Pillow would decode a PNG to find it).
        if image.format in ('JPEG', 'WEBP'):
            orientation = image.getexif().get(_EXIF_ORIENTATION_TAG)
            if orientation in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
    return width, height


def read_label(path: str) -> np.ndarray:
    """A label map as mmseg's LoadAnnotations reads it (Pillow, 'unchanged'): a palette PNG
    gives its indices, a 16-bit PNG its 16-bit values, an RGB PNG three channels."""
    from PIL import Image
    with Image.open(path) as image:
        return np.asarray(image)


def png_shape_problem(png: np.ndarray, png_path: str, image_path: str,
                      image_size: Tuple[int, int]) -> Tuple[str, str]:
    """What keeps a PNG (a label, a mask) from lying on its image pixel for pixel, if anything.

    Args:
        png (np.ndarray): The PNG as :func:`read_label` reads it.
        png_path (str): Its path, named in the problem.
        image_path (str): Its image's path, named in a size problem.
        image_size (Tuple[int, int]): (w, h) of the image as cv2 decodes it
            (:func:`decoded_image_size`).

    Returns:
        Tuple[str, str]: (kind, the files named with what is wrong): kind ``'channels'`` when
        the PNG is not single-channel, ``'size'`` when its w x h is not the image's; ``('',
        '')`` when it fits.
    """
    width, height = image_size
    if png.ndim != 2:
        return 'channels', f'{png_path} ({png.shape[2]} channels)'
    if png.shape != (height, width):
        return 'size', (f'{png_path} is {png.shape[1]}x{png.shape[0]} but {image_path} is '
                        f'{width}x{height}')
    return '', ''


def _label_histogram(label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(distinct values, pixel count of each) of a label map; a bincount for uint8 (10x faster
    than np.unique)."""
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=256)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(label, return_counts=True)


@dataclass
class SegFolderInfo:
    """What a segmentation folder holds, and what a benchmark config takes from it."""
    root: str
    classes: List[str]
    palette: Optional[List[Tuple[int, int, int]]]
    pairs: Dict[str, List[Tuple[str, str]]]  # split -> [(image path, label path)]
    image_sizes: Dict[str, List[Tuple[int, int]]]  # split -> [(w, h)] as cv2 decodes them
    train_short_side: int  # median short side of the train images (pixels)
    labels_checked: bool = False
    # split -> fraction of label pixels that are 255 (ignore); only when the labels were read
    ignore_fraction: Dict[str, float] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> str:
        """A few lines for a log: classes, pairs and image sizes a split."""
        lines = [f'{self.root}: {self.num_classes} classes ({", ".join(self.classes)}), '
                 f'palette {"from palette.txt" if self.palette else "random (no palette.txt)"}']
        for split, pairs in self.pairs.items():
            sizes = sorted(set(self.image_sizes[split]))
            size_text = (f'all {sizes[0][0]}x{sizes[0][1]}' if len(sizes) == 1 else
                         f'{len(sizes)} sizes, e.g. {_listing([f"{w}x{h}" for w, h in sizes])}')
            ignored = (f', {100 * self.ignore_fraction[split]:.1f}% ignore pixels'
                       if split in self.ignore_fraction else '')
            lines.append(f'  {split}: {len(pairs)} image/label pairs, {size_text}{ignored}')
        lines.append(f'  median short side of the train images: {self.train_short_side}; '
                     f'labels {"checked" if self.labels_checked else "not read"}')
        return '\n'.join(lines)


def check_seg_folder(root: str, splits: Sequence[str] = ('train', 'test'),
                     optional_splits: Sequence[str] = ('val', ),
                     check_labels: bool = True) -> SegFolderInfo:
    """Checks a segmentation folder once and records what a config needs from it.

    Always: classes.txt, palette.txt, the image / label pairing of every split, the decoded
    size of every image (header only). With ``check_labels`` it also reads every label as mmseg
    does and fails on a label that is not single-channel, not the size of its image, or holds
    a value that is neither a class id nor 255 (CamVid's 701 480x360 pairs: ~2 s).

    Args:
        root (str): The dataset folder.
        splits (Sequence[str]): Splits that must exist. Defaults to ``('train', 'test')``.
        optional_splits (Sequence[str]): Splits checked when their folders exist.
            Defaults to ``('val', )``.
        check_labels (bool): Read every label. Defaults to True.

    Returns:
        SegFolderInfo: Classes, palette, pairs, image sizes and the median short side.
    """
    classes = read_classes(root)
    palette = read_palette(root, len(classes))
    present = list(splits) + [s for s in optional_splits if s not in splits and
                              osp.isdir(osp.join(root, IMG_DIR, s))]
    pairs = {split: list_seg_pairs(root, split) for split in present}
    image_sizes = {split: [decoded_image_size(img) for img, _ in split_pairs]
                   for split, split_pairs in pairs.items()}
    ignore_fraction = {}
    if check_labels:
        for split, split_pairs in pairs.items():
            ignore_fraction[split] = _check_labels(split_pairs, image_sizes[split], classes)
    size_split = 'train' if 'train' in image_sizes else present[0]
    train_short_side = int(np.median([min(size) for size in image_sizes[size_split]]))
    return SegFolderInfo(root=root, classes=classes, palette=palette, pairs=pairs,
                         image_sizes=image_sizes, train_short_side=train_short_side,
                         labels_checked=check_labels, ignore_fraction=ignore_fraction)


def _check_labels(pairs: List[Tuple[str, str]], image_sizes: List[Tuple[int, int]],
                  classes: List[str]) -> float:
    """Reads every label of a split; raises on the first kind of problem found (every file with
    it named, at most 5 listed). Returns the fraction of ignore (255) pixels."""
    not_single_channel, wrong_size, bad_values = [], [], []
    ignored = total = 0
    for (image_path, label_path), (width, height) in zip(pairs, image_sizes):
        label = read_label(label_path)
        kind, problem = png_shape_problem(label, label_path, image_path, (width, height))
        if kind:
            (not_single_channel if kind == 'channels' else wrong_size).append(problem)
            continue
        values, counts = _label_histogram(label)
        unknown = values[(values >= len(classes)) & (values != IGNORE_INDEX)]
        if unknown.size:
            bad_values.append(f'{label_path} has {_listing(unknown.tolist())}')
        ignored += int(counts[values == IGNORE_INDEX].sum())
        total += label.size
    if not_single_channel:
        raise ValueError(
            f'{len(not_single_channel)} label(s) are not single-channel: '
            f'{_listing(not_single_channel)}. A label is a single-channel PNG of class ids (a '
            f'colour-coded label must first be mapped to ids, e.g. with palette.txt\'s colours).')
    if wrong_size:
        raise ValueError(f'{len(wrong_size)} label(s) differ in size (w x h) from their image: '
                         f'{_listing(wrong_size)}. Write each label at its image\'s size '
                         f'(resize with nearest-neighbour, never interpolate class ids).')
    if bad_values:
        raise ValueError(
            f'{len(bad_values)} label(s) hold values that are neither a class id '
            f'(0-{len(classes) - 1}, classes.txt) nor {IGNORE_INDEX} (ignore): '
            f'{_listing(bad_values)}. Map such a value to {IGNORE_INDEX} in the label, or add '
            f'its class to classes.txt (line i names id i).')
    return ignored / max(total, 1)
