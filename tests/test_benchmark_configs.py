"""Linear-probe and fine-tuning configs, strict Pretrained loading, and the offline k-NN tool."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmpretrain.registry import MODELS
from helpers import write_images

ROOT = osp.dirname(osp.dirname(__file__))
BENCH = sorted(glob.glob(osp.join(ROOT, 'configs/benchmarks/**/*.py'), recursive=True))
TINY_REPRE = osp.join(ROOT,
                      'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')
TINY_LINEAR = osp.join(
    ROOT, 'configs/benchmarks/linear/vit-tiny-p4_1xb256-linear-coslr-30e_fashion-mnist.py')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    """A tiny RePre checkpoint as tools/train.py writes it (state_dict + meta)."""
    cfg = Config.fromfile(TINY_REPRE)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('ckpt') / 'epoch_3.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=3)), path)
    return path, model


@pytest.mark.parametrize('path', BENCH, ids=lambda p: osp.relpath(p, ROOT))
def test_benchmark_config_builds(path):
    cfg = Config.fromfile(path)
    model = MODELS.build(cfg.model)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained' and cfg.model.backbone.init_cfg.strict
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    assert sum(p.numel() for p in model.parameters()) > 1e5


def _linear_runner(tmp_path, checkpoint):
    images = write_images(str(tmp_path / 'img'), num=4, size=28, with_classes=True)
    cfg = Config.fromfile(TINY_LINEAR)
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    cfg.model.head.num_classes = 2
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.update(data_root=images, data_prefix='')
        cfg[key].update(batch_size=4, num_workers=0)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.work_dir = str(tmp_path / 'work')
    return Runner.from_cfg(cfg)


def test_linear_probe_loads_every_backbone_weight_and_keeps_it_frozen(tmp_path, pretrained):
    checkpoint, repre = pretrained
    runner = _linear_runner(tmp_path, checkpoint)
    runner.train()
    backbone = runner.model.backbone.state_dict()
    expected = {k[len('backbone.'):]: v for k, v in repre.state_dict().items()
                if k.startswith('backbone.')}
    assert set(backbone) == set(expected)
    assert all(torch.equal(backbone[k], expected[k]) for k in expected)  # loaded, then frozen
    assert 'accuracy/top1' in runner.message_hub.runtime_info or \
        'val/accuracy/top1' in runner.message_hub.log_scalars


def test_strict_pretrained_refuses_a_mismatched_checkpoint(tmp_path, pretrained):
    checkpoint, repre = pretrained
    bad = str(tmp_path / 'bad.pth')
    state = {k: v for k, v in repre.state_dict().items() if 'layers.5.' not in k}
    torch.save({'state_dict': state}, bad)
    runner = _linear_runner(tmp_path, bad)
    with pytest.raises(KeyError, match=r'missing keys \[\'layers\.5\.'):
        runner.train()


def test_offline_knn_tool(tmp_path, pretrained):
    checkpoint, _ = pretrained
    images = write_images(str(tmp_path / 'img'), num=6, size=28, with_classes=True)
    out = subprocess.run(
        [sys.executable, 'tools/benchmarks/knn.py', TINY_REPRE, checkpoint, '--bank', images,
         '--bank-split', '', '--query', images, '--query-split', '', '--img-size', '28',
         '--workers', '0', '--batch-size', '4'],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
        timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith('k-NN')]
    assert len(lines) == 2 and 'bank 12, queries 12' in lines[0]
    assert lines[0].startswith('k-NN cls') and lines[1].startswith('k-NN patch_mean')
    assert 0 <= float(lines[0].split('top-1 ')[1].split('%')[0]) <= 100


def test_offline_knn_tool_scores_a_bare_backbone_as_its_checkpoint(tmp_path, pretrained):
    """tools/benchmarks/knn.py loads through repre_mm.apis.init_model, as the dense-probe tool
    does: a bare backbone (the layout tools/model_converters/extract_backbone.py writes) scores
    exactly as the full checkpoint it comes from. Real images (Fashion-MNIST, bank and queries
    apart) so that the score is not the 100% of a bank that holds the queries."""
    import json

    from repre_mm.datasets import load_fashion_mnist, write_image_folder
    checkpoint, repre = pretrained
    bare = str(tmp_path / 'backbone.pth')
    torch.save({k[len('backbone.'):]: v for k, v in repre.state_dict().items()
                if k.startswith('backbone.')}, bare)
    data, _ = load_fashion_mnist(str(tmp_path))  # an empty folder -> the shipped subset
    for split, per_class in (('train', 8), ('test', 4)):
        write_image_folder(str(tmp_path / 'fm' / split), *data[split], per_class=per_class)
    top1 = {}
    for name, ckpt in (('full', checkpoint), ('bare', bare)):
        out = subprocess.run(
            [sys.executable, 'tools/benchmarks/knn.py', TINY_REPRE, ckpt, '--bank',
             str(tmp_path / 'fm'), '--bank-split', 'train', '--query', str(tmp_path / 'fm'),
             '--query-split', 'test', '--img-size', '28', '--workers', '0', '--batch-size',
             '40', '--no-progress', '--out', str(tmp_path / f'{name}.json')],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
            timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        with open(tmp_path / f'{name}.json') as f:
            summary = json.load(f)
        assert (summary['bank'], summary['queries']) == (80, 40)
        top1[name] = summary['top1']
    assert top1['bare'] == top1['full'], top1
    assert set(top1['full']) == {'cls', 'patch_mean'}
    assert top1['full']['cls'] > 20  # 10 classes: a real score, not chance


def test_strict_false_is_the_explicit_opt_out(tmp_path, pretrained):
    checkpoint, repre = pretrained
    partial = str(tmp_path / 'partial.pth')
    state = {k: v for k, v in repre.state_dict().items() if 'layers.5.' not in k}
    torch.save({'state_dict': state}, partial)
    runner = _linear_runner(tmp_path, partial)
    runner.model.backbone.init_cfg['strict'] = False  # mmengine's non-strict behaviour
    runner.model.init_weights()
    loaded = runner.model.backbone.state_dict()
    assert torch.equal(loaded['layers.0.attn.qkv.weight'],
                       state['backbone.layers.0.attn.qkv.weight'])
