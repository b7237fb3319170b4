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
