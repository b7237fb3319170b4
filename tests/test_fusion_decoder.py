"""MultiLevelFusionDecoder and the reconstruction head."""
import pytest
import torch

from mmpretrain.registry import MODELS
from repre_mm.models.fusion_decoder import MultiLevelFusionDecoder, fusion_points
from repre_mm.utils.flops import count_flops


def _levels(channels, strides, H, W, batch=2):
    return [torch.randn(batch, c, H // s, W // s) for c, s in zip(channels, strides)]


@pytest.mark.parametrize('patch, H, W', [(16, 224, 224), (16, 64, 96), (8, 32, 32),
                                         (8, 40, 24), (4, 16, 28), (32, 64, 32)])
@pytest.mark.parametrize('upsample', ['pixel_shuffle', 'deconv', 'bilinear'])
def test_output_is_three_channels_at_input_size(patch, H, W, upsample):
    channels, strides = [48] * 4, [patch] * 4
    decoder = MultiLevelFusionDecoder(channels, strides, upsample=upsample, base_width=32)
    out = decoder(_levels(channels, strides, H, W))
    assert out.shape == (2, 3, H, W)


def test_hierarchical_levels_join_at_their_own_resolution():
    # Swin-T: 96..768 channels at strides 4..32
    channels, strides = [96, 192, 384, 768], [4, 8, 16, 32]
    assert fusion_points(strides, 5) == [3, 2, 1]
    decoder = MultiLevelFusionDecoder(channels, strides)
    assert decoder(_levels(channels, strides, 64, 96)).shape == (2, 3, 64, 96)


def test_vit_levels_spread_shallow_to_high_resolution():
    assert fusion_points([16] * 4, 4) == [3, 2, 1]
    assert fusion_points([16] * 2, 4) == [3]
    assert fusion_points([16] * 6, 4) == [3, 3, 2, 2, 1]
    assert fusion_points([16], 4) == []
    assert fusion_points([8] * 4, 3) == [2, 2, 1]


def test_every_level_influences_the_output():
    channels, strides = [16] * 4, [8] * 4
    decoder = MultiLevelFusionDecoder(channels, strides, base_width=16)
    levels = [x.requires_grad_() for x in _levels(channels, strides, 32, 32)]
    decoder(levels).sum().backward()
    assert all(x.grad.abs().sum() > 0 for x in levels)


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=[8, 8], in_strides=[16]), 'one channel count and one stride per level'),
    (dict(in_channels=[8], in_strides=[12]), 'power of two'),
    (dict(in_channels=[8, 8], in_strides=[16, 8]), 'shallow to deep'),
    (dict(in_channels=[8], in_strides=[16], widths=[32, 16]), 'one entry per x2 upsampling'),
    (dict(in_channels=[8], in_strides=[16], upsample='nearest'), 'is not one of'),
])
def test_bad_decoder_configs_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiLevelFusionDecoder(**kwargs)


def test_decoder_is_lightweight_against_vit_small():
    """The spec's budget: decoder forward FLOPs <= 10% of the ViT-S/16 encoder's, per view."""
    encoder = MODELS.build(dict(type='MoCoV3ViT', arch='mocov3-small', img_size=224,
                                patch_size=16))
    decoder = MultiLevelFusionDecoder([384] * 4, [16] * 4)
    image = torch.randn(1, 3, 224, 224)
    levels = _levels([384] * 4, [16] * 4, 224, 224, batch=1)
    encoder_flops = count_flops(encoder, image)
    decoder_flops = count_flops(decoder, levels)
    ratio = decoder_flops / encoder_flops
    print(f'ViT-S/16 encoder {encoder_flops / 1e9:.2f} GFLOPs, decoder '
          f'{decoder_flops / 1e9:.3f} GFLOPs, ratio {ratio:.3f}')
    assert 4.0e9 < encoder_flops < 5.0e9  # ViT-S/16 is ~4.6 GMACs: the counter is sane
    assert ratio <= 0.10


# --- reconstruction head ------------------------------------------------------------------------
def _head(**kwargs):
    return MODELS.build(dict(type='RePreReconstructionHead', **kwargs))


def test_l1_l2_smoothl1_match_direct_formulas():
    pred, images = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    assert torch.allclose(_head().loss(pred, images), (pred - images).abs().mean())
    assert torch.allclose(_head(criterion='L2', loss_weight=2.).loss(pred, images),
                          2 * ((pred - images)**2).mean())
    d = (pred - images).abs()
    smooth = torch.where(d < 1, 0.5 * d**2, d - 0.5).mean()
    assert torch.allclose(_head(criterion='SmoothL1').loss(pred, images), smooth)


def test_norm_pix_normalises_each_patch():
    images = torch.rand(2, 3, 16, 16) * 5 + 3
    target = _head(norm_pix=True, patch_size=8).construct_target(images)
    patch = target[0, :, :8, 8:]
    assert abs(patch.mean().item()) < 1e-5
    assert abs(patch.var().item() - 1) < 1e-3


def test_loss_is_fp32_under_autocast():
    pred, images = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = _head().loss(pred.bfloat16(), images)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize('kwargs, match', [
    (dict(criterion='L3'), 'is not one of'),
    (dict(norm_pix=True), 'needs `patch_size`'),
])
def test_bad_head_configs_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _head(**kwargs)
