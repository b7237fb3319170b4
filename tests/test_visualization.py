"""The visualisers: vis_reconstruction.py, vis_attention.py (in-process, from tiny checkpoints of
the small-scale configs) and ReconstructionVisualizationHook in a real Runner."""
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmpretrain.registry import MODELS
from repre_mm.apis import init_model
from repre_mm.visualization import cls_attention, normalise, read_image, reconstruct, to_pixels
from helpers import shrink_pretrain_cfg, tiny_repre, views, write_images

ROOT = osp.dirname(osp.dirname(__file__))
sys.path.insert(0, osp.join(ROOT, 'tools', 'visualization'))
CONFIGS = {
    'repre_mocov3': 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
    'repre_dino': 'configs/repre/repre_dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
    'mocov3': 'configs/baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
}
PANEL = 28 * 4  # the 28-pixel views are upscaled x4 to panels of at least 112 pixels


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """{name: (config, checkpoint)}: the small-scale models at their initial weights, saved as
    mmengine does (a dict with `state_dict`)."""
    folder = tmp_path_factory.mktemp('ckpt')
    out = {}
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        model = init_model(osp.join(ROOT, config))
        path = str(folder / f'{name}.pth')
        torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
        out[name] = (osp.join(ROOT, config), path)
    return out


@pytest.fixture(scope='module')
def user_images(tmp_path_factory):
    """A colour 40x60 JPEG and a grey 20x20 PNG: other sizes and channels than the model's."""
    folder = tmp_path_factory.mktemp('user')
    rng = np.random.default_rng(0)
    colour, grey = str(folder / 'colour.jpg'), str(folder / 'grey.png')
    cv2.imwrite(colour, rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(grey, rng.integers(0, 255, (20, 20), dtype=np.uint8))
    return [colour, grey]


def _read_rgb(path):
    return cv2.imread(path)[..., ::-1].astype(int)


# --- shared reconstruction logic -------------------------------------------------------------
@pytest.mark.parametrize('norm_pix', [False, True])
def test_reconstruct_of_a_perfect_decoder_gives_the_input_back(norm_pix):
    # A decoder that predicts exactly the training target must reconstruct the view itself:
    # with norm_pix, only if the per-patch mean / std are put back correctly.
    cfg = tiny_repre()
    cfg['rec_head']['norm_pix'] = norm_pix
    model = MODELS.build(cfg)
    images = views(batch=2)[0]
    model.decoder.forward = lambda levels: model.rec_head.construct_target(images)
    pred = reconstruct(model, images)
    assert pred.shape == images.shape
    torch.testing.assert_close(pred, images, atol=1e-4, rtol=1e-4)
    pixels = to_pixels(model, images)
    assert pixels.shape == (2, 32, 32, 3) and pixels.min() >= 0 and pixels.max() <= 255


def test_read_image_any_size_and_grey_to_the_encoder_size(user_images):
    for path in user_images:
        img = read_image(path, (28, 28))
        assert img.shape == (28, 28, 3) and img.dtype == np.uint8
    grey = read_image(user_images[1], (28, 28))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


# --- vis_reconstruction.py -------------------------------------------------------------------
@pytest.mark.parametrize('name', ['repre_mocov3', 'repre_dino'])
def test_vis_reconstruction_writes_colour_grids(name, checkpoints, user_images, tmp_path):
    import vis_reconstruction
    config, ckpt = checkpoints[name]
    out = str(tmp_path / 'out')
    written = vis_reconstruction.main([config, ckpt, *user_images, '--out', out])
    assert written == [osp.join(out, 'colour_reconstruction.png'),
                       osp.join(out, 'grey_reconstruction.png')]
    model = init_model(config, ckpt, bare_backbone=False)
    for path, image in zip(user_images, written):
        grid = _read_rgb(image)
        assert grid.shape == (PANEL, 3 * PANEL, 3)  # input | reconstruction | error
        inp, rec, err = (grid[:, i * PANEL:(i + 1) * PANEL] for i in range(3))
        # the input panel is the resized image (BGR file -> RGB), the error |rec - input|
        expected = read_image(path, (28, 28))[..., ::-1].repeat(4, 0).repeat(4, 1)
        assert np.abs(inp - expected).max() <= 1
        assert np.abs(err - np.abs(rec - inp)).max() <= 2
        # and the reconstruction is the model's, not a copy of the input
        x = normalise(model, [read_image(path, (28, 28))])
        with torch.no_grad():
            pred = to_pixels(model, reconstruct(model, x))[0].numpy()
        assert np.abs(rec[::4, ::4] - pred).max() <= 1
        assert np.abs(rec - inp).mean() > 1

    grid = vis_reconstruction.main([config, ckpt, *user_images, '--out', out, '--one-grid'])
    assert written[0] != grid[0] and _read_rgb(grid[0]).shape == (3 * PANEL, 2 * PANEL, 3)


def test_vis_reconstruction_refuses_a_baseline_and_a_mismatched_checkpoint(
        checkpoints, user_images, tmp_path):
    import vis_reconstruction
    config, ckpt = checkpoints['mocov3']
    with pytest.raises(SystemExit, match='has no decoder: vis_reconstruction needs a RePre'):
        vis_reconstruction.main([config, ckpt, user_images[0], '--out', str(tmp_path)])
    # a RePre config with the baseline's checkpoint: no decoder keys -> an error, no picture
    with pytest.raises(KeyError, match='missing keys'):
        vis_reconstruction.main([checkpoints['repre_mocov3'][0], ckpt, user_images[0],
                                 '--out', str(tmp_path)])
    # a bare backbone of the RePre run: the decoder would keep its initial weights -> refused
    state = torch.load(checkpoints['repre_mocov3'][1], map_location='cpu',
                       weights_only=False)['state_dict']
    bare = str(tmp_path.parent / 'bare_backbone.pth')
    torch.save({k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')},
               bare)
    with pytest.raises(KeyError, match='missing keys'):
        vis_reconstruction.main([checkpoints['repre_mocov3'][0], bare, user_images[0],
                                 '--out', str(tmp_path)])
    assert not os.listdir(tmp_path)


# --- vis_attention.py ------------------------------------------------------------------------
def test_cls_attention_is_what_the_last_block_computes():
    # Reference: make the last block compute its attention explicitly and keep the weights.
    model = MODELS.build(tiny_repre()).eval()
    images = views(batch=2)[0]
    attn = model.backbone.layers[-1].attn
    kept = {}

    def explicit(q, k, v, dropout_p=0.):
        weights = (q @ k.transpose(-2, -1) * attn.head_dims**-0.5).softmax(-1)
        kept['weights'] = weights
        return weights @ v

    maps = cls_attention(model.backbone, images)
    assert maps.shape == (2, 4, 4, 4)  # B x heads x (32 / 8) x (32 / 8)
    torch.testing.assert_close(maps.sum(dim=(-2, -1)), torch.ones(2, 4))
    attn.scaled_dot_product_attention = explicit
    with torch.no_grad():
        model.backbone(images)
    cls_row = kept['weights'][:, :, 0, 1:]
    expected = (cls_row / cls_row.sum(-1, keepdim=True)).reshape(2, 4, 4, 4)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('name,encoder', [('mocov3', 'online'), ('repre_dino', 'momentum')])
def test_vis_attention_writes_one_map_per_head(name, encoder, checkpoints, user_images,
                                               tmp_path):
    import vis_attention
    config, ckpt = checkpoints[name]
    written = vis_attention.main([config, ckpt, *user_images, '--out', str(tmp_path),
                                  '--encoder', encoder])
    assert [osp.basename(p) for p in written] == ['colour_attention.png', 'grey_attention.png']
    for path, image in zip(user_images, written):
        grid = _read_rgb(image)
        assert grid.shape == (PANEL, 5 * PANEL, 3)  # the input, then 4 heads
        expected = read_image(path, (28, 28))[..., ::-1].repeat(4, 0).repeat(4, 1)
        assert np.abs(grid[:, :PANEL] - expected).max() <= 1
        # nearest upsampling: one 16 x 16 block per patch (patch 4, x4)
        head = grid[:, PANEL:2 * PANEL]
        assert (head[:16, :16] == head[0, 0]).all()
        assert len(np.unique(head.reshape(-1, 3), axis=0)) > 1


# --- ReconstructionVisualizationHook ---------------------------------------------------------
def _runner(tmp_path, config, hooks, epochs):
    images = write_images(str(tmp_path / 'img'), num=8, size=28)
    cfg = shrink_pretrain_cfg(Config.fromfile(osp.join(ROOT, config)), images,
                              str(tmp_path / 'work'), img=28)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs)
    cfg.train_dataloader.batch_size = 4
    cfg.default_hooks.checkpoint = None
    cfg.custom_hooks = hooks
    cfg.visualizer = dict(type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
    return Runner.from_cfg(cfg)


def test_hook_sends_reconstructions_to_the_visualizer(tmp_path):
    folder = write_images(str(tmp_path / 'show'), num=2, size=50)
    hooks = [dict(type='ReconstructionVisualizationHook', interval=2, num_images=3),
             dict(type='ReconstructionVisualizationHook', image_folder=folder, num_images=5,
                  name='folder_reconstructions', interval=5)]
    runner = _runner(tmp_path, CONFIGS['repre_mocov3'], hooks, epochs=3)
    runner.train()
    vis_dir = osp.join(runner.log_dir, 'vis_data', 'vis_image')
    # every 2 epochs and after the last; the folder hook only after the last (interval 5)
    assert sorted(os.listdir(vis_dir)) == ['folder_reconstructions_3.png',
                                           'reconstructions_2.png', 'reconstructions_3.png']
    # rows: inputs, reconstructions, errors; a column per image (3 train views, 2 folder files)
    assert cv2.imread(osp.join(vis_dir, 'reconstructions_3.png')).shape == (
        3 * PANEL, 3 * PANEL, 3)
    assert cv2.imread(osp.join(vis_dir, 'folder_reconstructions_3.png')).shape == (
        3 * PANEL, 2 * PANEL, 3)
    # the same fixed views each time; the decoder trained in between
    epoch2, epoch3 = (_read_rgb(osp.join(vis_dir, f'reconstructions_{e}.png')) for e in (2, 3))
    assert (epoch2[:PANEL] == epoch3[:PANEL]).all()
    assert (epoch2[PANEL:2 * PANEL] != epoch3[PANEL:2 * PANEL]).any()
    assert runner.model.training  # the hook gives the model back in training mode


def test_hook_refuses_a_model_without_decoder_before_training(tmp_path):
    runner = _runner(tmp_path, CONFIGS['mocov3'],
                     [dict(type='ReconstructionVisualizationHook')], epochs=1)
    with pytest.raises(TypeError, match='has no decoder: ReconstructionVisualizationHook needs'):
        runner.train()
    assert runner.iter == 0  # stopped before the first step
