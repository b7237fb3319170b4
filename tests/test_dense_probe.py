"""The dense probe: mosaics, scores, and that it tells an encoder that sees from one that
doesn't."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmpretrain.registry import MODELS
from repre_mm.datasets import load_fashion_mnist
from repre_mm.evaluation import DenseProbe, make_mosaics, patch_token_maps
from repre_mm.evaluation.dense_probe import FINAL, pixel_patch_maps, segmentation_scores

ROOT = osp.dirname(osp.dirname(__file__))
TINY_REPRE = 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'


def fashion_items(n_train=600, n_test=300):
    data, _ = load_fashion_mnist()
    rgb = lambda x: np.repeat(x[..., None], 3, axis=3)  # noqa: E731
    return ((rgb(data['train'][0][:n_train]), data['train'][1][:n_train]),
            (rgb(data['test'][0][:n_test]), data['test'][1][:n_test]))


def test_mosaics_are_reproducible_and_labelled_by_the_item_under_each_pixel():
    items = np.zeros((3, 8, 8, 3), np.uint8)
    items[:, 2:6, 2:6] = 200  # a bright 4x4 square on black
    labels = np.array([0, 1, 2])
    a, la = make_mosaics(items, labels, num=5, num_classes=3, cell=12, seed=7)
    b, lb = make_mosaics(items, labels, num=5, num_classes=3, cell=12, seed=7)
    c, _ = make_mosaics(items, labels, num=5, num_classes=3, cell=12, seed=8)
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert a.shape == (5, 24, 24, 3) and la.shape == (5, 24, 24)
    # mask labels: bright pixels carry a class, every dark pixel is background (3)
    assert np.all((a.max(3) > 16) == (la < 3))
    assert (la < 3).sum() > 0 and (la < 3).sum() % 16 == 0  # whole 4x4 squares
    _, box = make_mosaics(items, labels, num=5, num_classes=3, cell=12, seed=7,
                          labels_from='box')
    assert (box < 3).sum() == (la < 3).sum() * 4  # the whole 8x8 item square
    with pytest.raises(ValueError, match='fit a cell'):
        make_mosaics(items, labels, num=1, num_classes=3, cell=6)


def test_segmentation_scores():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    assert segmentation_scores(target, target, 3) == dict(miou=100.0, pixel_acc=100.0)
    pred = torch.tensor([[0, 0, 1, 2], [2, 2, 2, 2]])
    scores = segmentation_scores(pred, target, 3)
    # IoU: class 0 = 1, class 1 = 1/2, class 2 = 4/5
    assert scores['miou'] == pytest.approx((1 + 0.5 + 0.8) / 3 * 100)
    assert scores['pixel_acc'] == pytest.approx(7 / 8 * 100)


def test_pixel_patch_maps_keep_every_channel():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    maps = pixel_patch_maps(images, 4)
    assert maps.shape == (2, 3 * 16, 2, 2)
    assert torch.equal(maps[1, :16, 0, 1], images[1, 0, :4, 4:8].flatten())
    assert torch.equal(maps[1, 16:32, 0, 1], images[1, 1, :4, 4:8].flatten())


@pytest.fixture(scope='module')
def probe_and_model():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    cfg = Config.fromfile(osp.join(ROOT, TINY_REPRE))
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    model.init_weights()
    pre = cfg.data_preprocessor
    probe = DenseProbe(*fashion_items(), num_classes=10, patch=4, mean=pre.mean, std=pre.std,
                       num_train=120, num_test=60)
    return probe, model


def test_probe_separates_an_encoder_that_sees_the_items_from_a_blind_one(probe_and_model):
    probe, model = probe_and_model
    backbone = model.backbone
    maps = patch_token_maps(backbone, probe.images['test'][:2], FINAL)
    assert maps.shape == (2, 128, 18, 18)  # 72x72 mosaics, patch 4: interpolated positions
    seeing = probe.score_encoder(backbone, FINAL)
    pixels = probe.score_pixels()
    # blind: the patch embedding sees nothing, only the position embedding remains
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    try:
        with torch.no_grad():
            backbone.patch_embed.projection.weight.zero_()
        blind = probe.score_encoder(backbone, FINAL)
    finally:
        backbone.load_state_dict(state)
    # mIoU over 11 labels: a blind encoder can only guess the background (~1/11 of the
    # classes with a fair IoU); one that sees separates items from background and some classes
    assert seeing['miou'] > 2 * blind['miou'] and seeing['miou'] > blind['miou'] + 8, (
        seeing, blind)
    assert pixels['miou'] > blind['miou'] + 3, (pixels, blind)
    assert blind['miou'] < 10 and seeing['pixel_acc'] > blind['pixel_acc']


def test_probe_block_out_of_range_is_an_error(probe_and_model):
    probe, model = probe_and_model
    with pytest.raises(ValueError, match='out of range: the backbone has 6 blocks'):
        probe.score_encoder(model.backbone, 6)


def test_dense_probe_tool_scores_a_checkpoint_and_a_bare_backbone(tmp_path, probe_and_model):
    _, model = probe_and_model
    full = str(tmp_path / 'repre.pth')
    torch.save(dict(state_dict=model.state_dict()), full)
    bare = str(tmp_path / 'backbone.pth')
    blind = {k[len('backbone.'):]: v.clone() for k, v in model.state_dict().items()
             if k.startswith('backbone.')}
    blind['patch_embed.projection.weight'].zero_()
    torch.save(blind, bare)
    scores = {}
    for name, ckpt in (('full', full), ('blind', bare)):
        out = str(tmp_path / f'{name}.json')
        proc = subprocess.run(
            [sys.executable, 'tools/benchmarks/dense_probe.py', TINY_REPRE, ckpt, '--blocks',
             '3', 'final', '--items', '600', '300', '--mosaics', '120', '60', '--out', out],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
            timeout=300)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        # quiet before its first line: no per-parameter init paragraphs, no setuptools warning
        assert 'init_weights' not in proc.stdout + proc.stderr
        assert 'pkg_resources' not in proc.stderr
        with open(out) as f:
            scores[name] = json.load(f)['scores']
        assert set(scores[name]) == {'3', 'final'}
    assert scores['full']['final']['miou'] > 2 * scores['blind']['final']['miou']
    # a checkpoint that does not match the config is refused, naming the keys
    wrong = str(tmp_path / 'wrong.pth')
    torch.save({'backbone.nonsense': torch.zeros(1)}, wrong)
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/dense_probe.py', TINY_REPRE, wrong], cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and 'unexpected keys' in proc.stderr
