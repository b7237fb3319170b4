"""tools/model_converters/extract_backbone.py on a real RePre checkpoint."""
import os
import os.path as osp
import subprocess
import sys

import torch

from mmpretrain.registry import MODELS
from helpers import tiny_repre, tiny_vit

ROOT = osp.dirname(osp.dirname(__file__))


def test_extract_backbone_loads_with_zero_missing_keys(tmp_path):
    torch.manual_seed(0)
    repre = MODELS.build(tiny_repre())
    repre.init_weights()
    src, dst = str(tmp_path / 'repre.pth'), str(tmp_path / 'out' / 'backbone.pth')
    torch.save(dict(state_dict=repre.state_dict(), meta=dict(epoch=1)), src)
    out = subprocess.run([sys.executable, 'tools/model_converters/extract_backbone.py', src, dst],
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'decoder' in out.stdout and 'momentum_encoder' in out.stdout  # says what it dropped
    state = torch.load(dst, weights_only=True)['state_dict']
    for type_ in ('MoCoV3ViT', 'VisionTransformer'):
        backbone = MODELS.build(tiny_vit(type=type_))
        missing, unexpected = backbone.load_state_dict(state, strict=False)
        assert not missing and not unexpected, (type_, missing, unexpected)
        x = torch.randn(2, 3, 32, 32)
        repre.eval(), backbone.eval()
        assert torch.allclose(backbone(x)[0], repre.backbone(x)[0])


def test_extract_backbone_refuses_a_checkpoint_without_backbone(tmp_path):
    src = str(tmp_path / 'x.pth')
    torch.save({'state_dict': {'decoder.w': torch.zeros(1)}}, src)
    out = subprocess.run([sys.executable, 'tools/model_converters/extract_backbone.py', src,
                          str(tmp_path / 'y.pth')], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode != 0 and "no key starts with 'backbone.'" in out.stderr
    assert not osp.exists(tmp_path / 'y.pth')


def _convert(src, dst, to):
    return subprocess.run([sys.executable, 'tools/model_converters/vit_layouts.py', src, dst,
                           '--to', to], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=120)


def _repre_checkpoint(tmp_path):
    torch.manual_seed(0)
    repre = MODELS.build(tiny_repre())
    repre.init_weights()
    for p in repre.parameters():  # non-trivial values everywhere (LayerNorms too)
        p.data.add_(torch.randn_like(p) * 0.02)
    src = str(tmp_path / 'repre.pth')
    torch.save(dict(state_dict=repre.state_dict()), src)
    repre.eval()
    return src, repre


def test_timm_layout_round_trip(tmp_path):
    import timm.models.vision_transformer as timm_vit
    src, repre = _repre_checkpoint(tmp_path)
    out = _convert(src, str(tmp_path / 'timm.pth'), 'timm')
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'decoder' in out.stdout  # dropped, and said so
    model = timm_vit.VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=4,
                                       num_heads=4, mlp_ratio=2, num_classes=0).eval()
    model.load_state_dict(torch.load(tmp_path / 'timm.pth', weights_only=True), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(x)[:, 0], repre.backbone(x)[0], atol=1e-5)


def test_mmseg_layout_round_trip(tmp_path):
    from mmseg.models.backbones import VisionTransformer as MMSegViT
    src, repre = _repre_checkpoint(tmp_path)
    out = _convert(src, str(tmp_path / 'mmseg.pth'), 'mmseg')
    assert out.returncode == 0, out.stderr[-2000:]
    model = MMSegViT(img_size=(32, 32), patch_size=8, embed_dims=64, num_layers=4, num_heads=4,
                     mlp_ratio=2, out_indices=(1, 3), final_norm=True, patch_bias=True,
                     norm_cfg=dict(type='LN', eps=1e-6))
    state = torch.load(tmp_path / 'mmseg.pth', weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    model.eval()
    reference = MODELS.build(dict(tiny_vit(type='VisionTransformer'), out_type='featmap',
                                  out_indices=(1, 3)))
    reference.eval()  # (mmpretrain backbones' train() returns None)
    reference.load_state_dict({k[len('backbone.'):]: v for k, v in repre.state_dict().items()
                               if k.startswith('backbone.')})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for ours, theirs in zip(reference(x), model(x)):
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_mmpretrain_layout_keeps_the_backbone_prefix(tmp_path):
    src, repre = _repre_checkpoint(tmp_path)
    out = _convert(src, str(tmp_path / 'mmpretrain.pth'), 'mmpretrain')
    assert out.returncode == 0, out.stderr[-2000:]
    state = torch.load(tmp_path / 'mmpretrain.pth', weights_only=True)['state_dict']
    assert set(state) == {k for k in repre.state_dict() if k.startswith('backbone.')}


def test_a_backbone_key_without_counterpart_writes_nothing(tmp_path):
    src, repre = _repre_checkpoint(tmp_path)
    state = dict(repre.state_dict(), **{'backbone.layers.0.gamma': torch.ones(64)})
    torch.save({'state_dict': state}, src)
    out = _convert(src, str(tmp_path / 'timm.pth'), 'timm')
    assert out.returncode != 0 and "['layers.0.gamma']" in out.stderr
    assert not os.path.exists(tmp_path / 'timm.pth')
