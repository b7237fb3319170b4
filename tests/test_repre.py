"""The RePre algorithm on top of mmpretrain's MoCo v3 (tiny ViT, CPU)."""
import pytest
import torch
import torch.nn.functional as F

from mmpretrain.registry import MODELS
from helpers import tiny_byol, tiny_dino, tiny_mocov3, tiny_repre, tiny_simclr, views


def build(cfg, seed=0):
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def test_checkpoint_layout_is_the_frameworks_plus_decoder():
    repre = build(tiny_repre())
    base = build(tiny_mocov3())
    repre_keys = set(repre.state_dict())
    base_keys = set(base.state_dict())
    assert base_keys <= repre_keys
    extra = {k.split('.')[0] for k in repre_keys - base_keys}
    assert extra == {'decoder', 'rec_head'} or extra == {'decoder'}


def test_weight_zero_reproduces_mmpretrain_mocov3_loss_exactly():
    base = build(tiny_mocov3())
    repre = build(tiny_repre(loss_weight=0.0))
    # same framework weights (the decoder's init must not disturb anything else)
    missing, unexpected = repre.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(k.startswith(('decoder', 'rec_head')) for k in missing)
    inputs = views()
    torch.manual_seed(1)
    base_losses = base.loss(inputs, None)
    torch.manual_seed(1)
    repre_losses = repre.loss(inputs, None)
    assert set(repre_losses) == {'loss', 'loss_rec'}
    assert torch.equal(base_losses['loss'], repre_losses['loss'])
    total, _ = repre.parse_losses(repre_losses)
    assert torch.equal(total, base_losses['loss'])
    # and the momentum encoders moved identically
    for (n1, p1), (n2, p2) in zip(base.momentum_encoder.named_parameters(),
                                  repre.momentum_encoder.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@pytest.mark.parametrize('framework', [tiny_mocov3, tiny_simclr, tiny_byol, tiny_dino])
def test_reconstruction_branch_leaves_the_framework_loss_unchanged(framework):
    base = build(framework())
    repre = build(tiny_repre(loss_weight=1.0, framework=framework()))
    repre.load_state_dict(base.state_dict(), strict=False)
    inputs = views()
    torch.manual_seed(1)
    expected = base.loss(inputs, None)['loss']
    torch.manual_seed(1)
    losses = repre.loss(inputs, None)
    assert torch.equal(losses['loss'], expected)  # the tap only observes
    assert losses['loss_rec'] > 0
    total, _ = repre.parse_losses(losses)
    assert torch.allclose(total, expected + losses['loss_rec'])


def test_encoder_runs_once_per_view_and_momentum_encoder_never_decoded():
    repre = build(tiny_repre())
    online_calls, momentum_calls = [], []
    repre.backbone.register_forward_hook(lambda m, a, o: online_calls.append(a[0].shape))
    repre.momentum_encoder.module[0].register_forward_hook(
        lambda m, a, o: momentum_calls.append(a[0].shape))
    decoder_calls = []
    repre.decoder.register_forward_hook(lambda m, a, o: decoder_calls.append(o.shape))
    repre.loss(views(), None)
    assert len(online_calls) == 2  # one per view: levels come from the same pass
    assert len(momentum_calls) == 2
    assert decoder_calls == [torch.Size([4, 3, 32, 32])] * 2


def test_gradients_reach_decoder_and_every_kept_level_but_not_momentum_encoder():
    repre = build(tiny_repre(levels=(0, 2, 3)))
    losses = repre.loss(views(), None)
    losses['loss_rec'].backward()
    for name, p in repre.decoder.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for level in (0, 2, 3):
        grads = [p.grad for p in repre.backbone.layers[level].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), level
    for p in repre.momentum_encoder.parameters():
        assert p.grad is None


def test_reconstruction_alone_does_not_train_blocks_above_the_deepest_level():
    repre = build(tiny_repre(levels=(0, 1)))
    repre.loss(views(), None)['loss_rec'].backward()
    assert all(p.grad is None for p in repre.backbone.layers[3].parameters())


def test_tiny_model_overfits_one_batch():
    repre = build(tiny_repre(levels=(1, 3)))
    # smooth images: white noise has no structure an 8x8-patch encoder could compress
    g = torch.Generator().manual_seed(0)
    inputs = [F.interpolate(torch.randn(4, 3, 8, 8, generator=g), size=32, mode='bilinear')
              for _ in range(2)]
    params = list(repre.backbone.parameters()) + list(repre.decoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for step in range(150):
        loss = repre.loss(inputs, None)['loss_rec']
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first, (first, loss.item())


@pytest.mark.parametrize('levels, match', [
    ((1, 4), 'out of range'),
    ((-5,), 'out of range'),
    ((3, 1), 'shallow to deep'),
    ((), 'non-empty'),
])
def test_bad_levels_are_clear_errors(levels, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(tiny_repre(levels=levels))


def test_input_not_divisible_by_patch_is_a_clear_error():
    repre = build(tiny_repre())
    with pytest.raises(ValueError, match='not divisible by the encoder stride 8'):
        repre.loss(views(size=36), None)


def test_configured_image_size_not_divisible_by_patch_fails_at_build():
    with pytest.raises(ValueError, match='input size 36x36 is not divisible by the encoder '
                       'stride 8'):
        MODELS.build(tiny_repre(framework=tiny_mocov3(img_size=36)))


def test_unknown_framework_is_a_clear_error():
    cfg = tiny_repre()
    cfg['framework']['type'] = 'MoCoV9'
    with pytest.raises(KeyError, match="unknown framework type 'MoCoV9'"):
        MODELS.build(cfg)


def test_framework_without_vit_backbone_is_a_clear_error():
    cfg = tiny_repre()
    cfg['framework']['backbone'] = dict(type='ResNet', depth=18)
    cfg['framework']['neck']['in_channels'] = 512
    with pytest.raises(TypeError, match='ViT-like backbone'):
        MODELS.build(cfg)


def test_decoder_inconsistent_with_backbone_is_a_clear_error():
    cfg = tiny_repre(decoder=dict(type='MultiLevelFusionDecoder', in_channels=[32, 32]))
    with pytest.raises(ValueError, match='does not match the backbone levels'):
        MODELS.build(cfg)


def test_non_square_views_and_patch_16():
    cfg = tiny_repre(framework=tiny_mocov3(img_size=64, patch_size=16))
    repre = build(cfg)
    inputs = [torch.randn(2, 3, 32, 64), torch.randn(2, 3, 32, 64)]
    losses = repre.loss(inputs, None)
    assert torch.isfinite(losses['loss_rec'])


def test_train_mode_propagates_to_the_framework():
    repre = build(tiny_repre())
    repre.eval()
    assert not repre.framework.training and not repre.backbone.training
    repre.train()
    assert repre.framework.training and repre.backbone.training


def test_forward_tensor_mode_is_the_frameworks():
    repre = build(tiny_repre())
    x = torch.randn(2, 3, 32, 32)
    feats = repre(x, mode='tensor')
    assert torch.equal(feats[0], repre.backbone(x)[0])


def test_simclr_stacks_both_views_in_one_call_and_each_is_reconstructed():
    repre = build(tiny_repre(framework=tiny_simclr()))
    targets = []
    original = repre.rec_head.loss
    repre.rec_head.loss = lambda pred, images: targets.append(images) or original(pred, images)
    inputs = views(batch=3)
    repre.loss(inputs, None)
    [target] = targets  # one backbone call with 2B images
    assert target.shape == (6, 3, 32, 32)
    assert torch.equal(target[0], inputs[0][0]) and torch.equal(target[1], inputs[1][0])
