"""COCO instances from mask PNGs: repre_mm.datasets.coco_from_masks, the converter
tools/dataset_converters/masks_to_coco.py, and the result read by pycocotools and mmdet.

Every dataset is generated here: small random images with instance-id, binary (0/1 and 0/255)
and semantic masks of rectangles and ellipses.
"""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from repre_mm.datasets import coco_from_masks
from repre_mm.datasets.coco_from_masks import instances_from_mask, masks_to_coco

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TOOL = osp.join(ROOT, 'tools', 'dataset_converters', 'masks_to_coco.py')
H, W = 30, 40


def load_tool():
    spec = importlib.util.spec_from_file_location('masks_to_coco_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_sample(root, stem, mask, ext='.png', seed=0):
    """A random image ``root/images/<stem><ext>`` of the mask's size and the mask
    ``root/masks/<stem>.png``; returns (images folder, masks folder)."""
    images_dir, masks_dir = osp.join(root, 'images'), osp.join(root, 'masks')
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(masks_dir, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, mask.shape[:2] + (3, ), np.uint8)
    cv2.imwrite(osp.join(images_dir, stem + ext), image)
    cv2.imwrite(osp.join(masks_dir, stem + '.png'), mask)
    return images_dir, masks_dir


def instance_masks():
    """{stem: mask}: 'a' has id 1 in two pieces, id 2 an ellipse, id 3 a ring (a hole); 'b'
    has id 1, a single pixel."""
    a = np.zeros((H, W), np.uint8)
    a[2:8, 3:10] = 1
    a[20:26, 30:38] = 1
    cv2.ellipse(a, (18, 15), (8, 5), 30, 0, 360, 2, -1)
    cv2.rectangle(a, (30, 2), (38, 12), 3, -1)
    a[6:8, 33:35] = 0
    b = np.zeros((H, W), np.uint8)
    b[4, 7] = 1
    return {'a': a, 'b': b}


def binary_mask(foreground):
    """Regions of 100 and 20 pixels, two 3x3 blocks that touch at a corner (one 8-connected
    region of 18) and a 4-pixel speck."""
    mask = np.zeros((H, W), np.uint8)
    mask[2:12, 2:12] = foreground
    mask[20:25, 2:6] = foreground
    mask[2:5, 20:23] = foreground
    mask[5:8, 23:26] = foreground
    mask[25:27, 35:37] = foreground
    return mask


@pytest.fixture
def instance_folder(tmp_path):
    for stem, mask in instance_masks().items():
        images_dir, masks_dir = write_sample(str(tmp_path), stem, mask)
    return images_dir, masks_dir


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_instance_masks_as_rle_match_pycocotools(instance_folder):
    coco = masks_to_coco(*instance_folder, ['cell'], rle=True)
    masks = instance_masks()
    assert [(i['id'], i['file_name'], i['width'], i['height']) for i in coco['images']] == [
        (1, 'a.png', W, H), (2, 'b.png', W, H)]
    assert coco['categories'] == [dict(id=1, name='cell', supercategory='cell')]
    expected = [(1, 'a', 1), (1, 'a', 2), (1, 'a', 3), (2, 'b', 1)]  # (image id, stem, mask id)
    assert [a['id'] for a in coco['annotations']] == [1, 2, 3, 4]
    for annotation, (image_id, stem, value) in zip(coco['annotations'], expected):
        instance = masks[stem] == value
        rle = annotation['segmentation']
        assert isinstance(rle['counts'], str)  # JSON-ready
        assert annotation['image_id'] == image_id and annotation['category_id'] == 1
        assert annotation['iscrowd'] == 0
        np.testing.assert_array_equal(mask_util.decode(rle).astype(bool), instance)
        assert annotation['area'] == mask_util.area(rle) == instance.sum()
        assert annotation['bbox'] == mask_util.toBbox(rle).tolist()
    assert coco['annotations'][0]['bbox'] == [3, 2, 35, 24]  # both pieces of id 1
    assert coco['annotations'][3]['bbox'] == [7, 4, 1, 1] and coco['annotations'][3]['area'] == 1
    # --max-instances at the largest id present is no error
    assert len(masks_to_coco(*instance_folder, ['cell'], max_instances=3)['annotations']) == 4


def test_instance_masks_as_polygons_rasterise_back(instance_folder, tmp_path, monkeypatch):
    from pycocotools.coco import COCO
    coco = masks_to_coco(*instance_folder, ['cell'])
    out = str(tmp_path / 'instances.json')
    with open(out, 'w') as f:
        json.dump(coco, f)
    loaded = COCO(out)
    masks = instance_masks()
    for annotation, (stem, value) in zip(loaded.loadAnns(loaded.getAnnIds()),
                                         [('a', 1), ('a', 2), ('a', 3), ('b', 1)]):
        instance = masks[stem] == value
        assert isinstance(annotation['segmentation'], list)
        assert all(len(polygon) >= 6 for polygon in annotation['segmentation'])
        rasterised = loaded.annToMask(annotation).astype(bool)
        assert iou(rasterised, instance) > 0.9
        assert annotation['area'] == instance.sum()  # the mask's pixels, not the polygon's
        if value != 3:  # the polygons follow the pixel borders: exact without holes
            np.testing.assert_array_equal(rasterised, instance)
    ring = loaded.anns[3]
    hole = np.zeros((H, W), bool)
    hole[6:8, 33:35] = True
    assert loaded.annToMask(ring)[hole].all()  # a polygon cannot hold the hole: filled
    assert len(loaded.anns[1]['segmentation']) == 2  # two pieces, two polygons

    # no polygon left (cannot happen for a real region): the instance falls back to RLE
    monkeypatch.setattr(coco_from_masks, 'polygons_from_mask', lambda instance: [])
    coco = masks_to_coco(*instance_folder, ['cell'])
    assert all(isinstance(a['segmentation'], dict) for a in coco['annotations'])
    assert coco['info']['rle_fallbacks'] == 4


@pytest.mark.parametrize('foreground', [1, 255])
def test_binary_masks_give_connected_regions(tmp_path, foreground):
    folders = write_sample(str(tmp_path), 'x', binary_mask(foreground))
    coco = masks_to_coco(*folders, ['blob'], mode='binary', min_area=10)
    assert [a['area'] for a in coco['annotations']] == [100, 18, 20]  # in raster order
    assert [a['bbox'] for a in coco['annotations']] == [[2, 2, 10, 10], [20, 2, 6, 6],
                                                        [2, 20, 4, 5]]
    assert coco['info']['instances_under_min_area'] == 1  # the 4-pixel speck
    assert len(masks_to_coco(*folders, ['blob'], mode='binary')['annotations']) == 4
    whole = masks_to_coco(*folders, ['blob'], mode='binary', whole=True, min_area=10)
    assert [(a['area'], a['bbox']) for a in whole['annotations']] == [(142, [2, 2, 35, 25])]
    instances, dropped = instances_from_mask(binary_mask(foreground), 'binary', min_area=200,
                                             whole=True)
    assert instances == [] and dropped == 1


def test_semantic_masks_give_regions_of_each_class(tmp_path):
    mask = np.zeros((H, W), np.uint8)
    mask[2:8, 2:8] = 1
    mask[2:8, 20:30] = 1
    mask[15:25, 10:20] = 2
    folders = write_sample(str(tmp_path), 's', mask)
    coco = masks_to_coco(*folders, ['road', 'car'], mode='semantic')
    assert [c['name'] for c in coco['categories']] == ['road', 'car']
    assert [(a['category_id'], a['bbox'], a['area']) for a in coco['annotations']] == [
        (1, [2, 2, 6, 6], 36), (1, [20, 2, 10, 6], 60), (2, [10, 15, 10, 10], 100)]
    # a class without pixels in a mask is no error (a value above the classes is: BAD_INPUTS)
    assert len(masks_to_coco(*folders, ['road', 'car', 'tree'], mode='semantic')
               ['annotations']) == 3


def test_json_loads_in_mmdet_coco_dataset(tmp_path):
    import repre_mm  # noqa: F401
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    root = str(tmp_path)
    write_sample(root, 'x', binary_mask(1))
    images_dir, masks_dir = write_sample(root, 'y', np.zeros((H, W), np.uint8), ext='.jpg')
    for rle in (False, True):
        coco = masks_to_coco(images_dir, masks_dir, ['blob'], mode='binary', min_area=10,
                             rle=rle)
        with open(osp.join(root, 'ann.json'), 'w') as f:
            json.dump(coco, f)
        dataset = CocoDataset(data_root=root, ann_file='ann.json', data_prefix=dict(img='images'),
                              metainfo=dict(classes=('blob', )), pipeline=[], test_mode=True)
        assert len(dataset) == 2  # the image without instances stays (a negative)
        info = dataset.get_data_info(0)
        assert info['img_path'] == osp.join(root, 'images', 'x.png')
        assert [i['bbox'] for i in info['instances']] == [[2, 2, 12, 12], [20, 2, 26, 8],
                                                          [2, 20, 6, 25]]
        assert [i['bbox_label'] for i in info['instances']] == [0, 0, 0]
        assert dataset.get_data_info(1)['instances'] == []
        # mmdet's own loading turns either segmentation into the instance masks
        info['ori_shape'] = (H, W)
        loaded = LoadAnnotations(with_bbox=True, with_mask=True)(info)
        assert not loaded['gt_ignore_flags'].any()
        expected, _ = instances_from_mask(binary_mask(1), 'binary', min_area=10)
        np.testing.assert_array_equal(loaded['gt_masks'].masks.astype(bool),
                                      np.stack([m for _, m in expected]))


def _remove(root, sub, name):
    os.remove(osp.join(root, sub, name))


def _write_mask(root, stem, mask):
    cv2.imwrite(osp.join(root, 'masks', stem + '.png'), mask)


# name: (break the folder, options, error, message)
BAD_INPUTS = {
    'image without mask': (lambda r: _remove(r, 'masks', 'b.png'), {}, FileNotFoundError,
                           r'1 image\(s\) in .*images have no mask <stem>\.png in .*masks: '
                           r'b\.png\.'),
    'mask without image': (lambda r: _remove(r, 'images', 'a.png'), {}, FileNotFoundError,
                           r'1 mask\(s\) in .*masks have no image .*: a\.png\.'),
    'size mismatch': (lambda r: _write_mask(r, 'b', np.zeros((W, H), np.uint8)), {},
                      ValueError, r'masks/b\.png is 30x40 but .*images/b\.png is 40x30'),
    'id above --max-instances': (lambda r: None, dict(max_instances=2), ValueError,
                                 r'masks/a\.png has value\(s\) 3; instance masks hold ids up '
                                 r'to 2 \(--max-instances\)'),
    'bad binary value': (lambda r: None, dict(mode='binary'), ValueError,
                         r'masks/a\.png has value\(s\) 2, 3; binary masks hold 0 '
                         r'\(background\) and 1 or 255'),
    'semantic value above the classes': (lambda r: None, dict(mode='semantic'), ValueError,
                                         r'masks/a\.png has value\(s\) 3; semantic masks hold '
                                         r'0 \(background\) and the class ids 1-2'),
    'colour mask': (lambda r: _write_mask(r, 'b', np.zeros((H, W, 3), np.uint8)), {},
                    ValueError, r'masks/b\.png \(3 channels\)'),
}


@pytest.mark.parametrize('case', list(BAD_INPUTS))
def test_bad_input_names_the_file(instance_folder, tmp_path, case):
    break_folder, options, error, message = BAD_INPUTS[case]
    break_folder(str(tmp_path))
    classes = ['road', 'car'] if options.get('mode') == 'semantic' else ['cell']
    with pytest.raises(error, match=message):
        masks_to_coco(*instance_folder, classes, **options)


@pytest.mark.parametrize('options, message', [
    (dict(classes=['a', 'b']), r'2 classes .* for instance-id masks.*--semantic'),
    (dict(classes=['a', 'b'], mode='binary'), r'2 classes given for binary masks'),
    (dict(classes=['a', 'a'], mode='semantic'), r'class names repeat a'),
    (dict(classes=['a'], whole=True), r'--whole.*--binary only'),
    (dict(classes=['a'], mode='semantic', max_instances=3), r'--max-instances'),
    (dict(classes=['a'], min_area=0), r'--min-area'),
])
def test_options_that_do_not_fit(instance_folder, options, message):
    with pytest.raises(ValueError, match=message):
        masks_to_coco(*instance_folder, **options)


def test_exif_rotated_jpeg_is_sized_as_decoded(tmp_path):
    from PIL import Image
    images_dir, masks_dir = write_sample(str(tmp_path), 'm', np.ones((64, 48), np.uint8))
    os.remove(osp.join(images_dir, 'm.png'))
    exif = Image.Exif()
    exif[0x0112] = 6  # the 64x48 header displays (and cv2 decodes) as 48x64
    Image.new('RGB', (64, 48)).save(osp.join(images_dir, 'm.jpg'), exif=exif)
    coco = masks_to_coco(images_dir, masks_dir, ['x'])
    assert (coco['images'][0]['width'], coco['images'][0]['height']) == (48, 64)


def tree(folder):
    return sorted(osp.relpath(osp.join(d, n), folder) for d, _, ns in os.walk(folder)
                  for n in ns)


def test_tool_writes_checks_and_reports_empty_masks(instance_folder, tmp_path, capsys):
    tool = load_tool()
    root = str(tmp_path)
    write_sample(root, 'c', np.zeros((H, W), np.uint8))  # no instance: kept as a negative
    os.makedirs(osp.join(root, 'images', 'sub'))
    cv2.imwrite(osp.join(root, 'images', 'sub', 'd.png'), np.zeros((H, W, 3), np.uint8))
    os.makedirs(osp.join(root, 'masks', 'sub'))
    cv2.imwrite(osp.join(root, 'masks', 'sub', 'd.png'), np.zeros((H, W), np.uint8))
    before = tree(root)
    out = osp.join(root, 'annotations', 'instances.json')
    tool.main([*instance_folder, out, '--classes', 'cell', '--max-instances', '3'])
    printed = capsys.readouterr().out
    assert '4 images, 4 instances (cell 4); instance masks, polygons' in printed
    assert 'warning: 2 mask(s) had no instance, their images are kept without annotations: ' \
           'c.png, sub/d.png' in printed
    assert 'pycocotools loads it' in printed
    assert tree(root) == sorted(before + ['annotations/instances.json'])  # sources only read
    with open(out) as f:
        coco = json.load(f)
    assert [i['file_name'] for i in coco['images']] == ['a.png', 'b.png', 'c.png', 'sub/d.png']
    assert {a['image_id'] for a in coco['annotations']} == {1, 2}

    tool.main([*instance_folder, out, '--classes', 'cell', '--rle', '--image-root', root])
    with open(out) as f:  # a rerun replaces the tool's own file
        coco = json.load(f)
    assert coco['images'][3]['file_name'] == 'images/sub/d.png'
    assert isinstance(coco['annotations'][0]['segmentation'], dict)

    with pytest.raises(ValueError, match='is inside .*masks: the sources are only read'):
        tool.main([*instance_folder, osp.join(root, 'masks', 'x.json'), '--classes', 'cell'])
    other = osp.join(root, 'other.json')
    with open(other, 'w') as f:
        json.dump(dict(images=[]), f)
    with pytest.raises(FileExistsError, match='other.json exists and was not written by this'):
        tool.main([*instance_folder, other, '--classes', 'cell'])
    tool.main([*instance_folder, other, '--classes', 'cell', '--overwrite'])
    with pytest.raises(SystemExit):  # argparse's error: the options do not fit
        tool.main([*instance_folder, out, '--classes', 'a', 'b'])
    assert 'for instance-id masks' in capsys.readouterr().err


def test_cli_end_to_end(tmp_path):
    root = str(tmp_path)
    write_sample(root, 'h1', binary_mask(255), ext='.jpg')
    images_dir, masks_dir = write_sample(root, 'h2', binary_mask(1), ext='.jpg', seed=1)
    out = osp.join(root, 'annotations', 'instances_train.json')
    result = subprocess.run(
        [sys.executable, TOOL, images_dir, masks_dir, out, '--binary', '--classes', 'horse',
         '--min-area', '10'], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert '2 images, 6 instances (horse 6); binary masks, polygons' in result.stdout
    assert '2 instance(s) under --min-area 10 pixels dropped' in result.stdout
    with open(out) as f:
        coco = json.load(f)
    assert [i['file_name'] for i in coco['images']] == ['h1.jpg', 'h2.jpg']
    assert coco['categories'][0]['name'] == 'horse'


def test_image_root_holding_symlinked_split_folders(tmp_path, capsys):
    """A dataset root whose split folders are symlinks to the sources (as the CamVid converter
    makes, and as one does for Weizmann Horse's train/ and test/): file_name is the path under
    the root as written, not as resolved, and the symlinks are accepted."""
    source, root = str(tmp_path / 'source'), str(tmp_path / 'horse')
    write_sample(osp.join(source, 'train'), 'h1', binary_mask(1), ext='.jpg')
    os.makedirs(root)
    os.symlink(osp.join(source, 'train'), osp.join(root, 'train'))
    out = osp.join(root, 'annotations', 'instances_train.json')
    load_tool().main([osp.join(root, 'train', 'images'), osp.join(root, 'train', 'masks'), out,
                      '--binary', '--classes', 'horse', '--image-root', root])
    with open(out) as f:
        coco = json.load(f)
    assert [i['file_name'] for i in coco['images']] == ['train/images/h1.jpg']
    assert osp.isfile(osp.join(root, coco['images'][0]['file_name']))
    with pytest.raises(ValueError, match='is not inside the image root'):
        load_tool().main([osp.join(source, 'train', 'images'), osp.join(source, 'train', 'masks'),
                          out, '--binary', '--classes', 'horse', '--image-root', root])
