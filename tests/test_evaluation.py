"""k-NN (DINO protocol), the linear probe, the Fashion-MNIST tool and the k-NN hook."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from repre_mm.datasets import CLASSES, load_fashion_mnist
from repre_mm.evaluation import knn_accuracy, knn_predict, linear_probe_accuracy
from helpers import write_images

ROOT = osp.dirname(osp.dirname(__file__))


@pytest.fixture(scope='module')
def digits():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_knn_on_raw_pixels_matches_scikit_learn(digits):
    from sklearn.neighbors import KNeighborsClassifier
    x, y = digits
    bank, bank_y, query, query_y = x[:1200], y[:1200], x[1200:], y[1200:]
    ours = knn_predict(bank, bank_y, query, num_classes=10, k=20, temperature=0.07)
    # the same rule in scikit-learn: cosine distance d = 1 - s, vote weight exp(s / T)
    reference = KNeighborsClassifier(
        n_neighbors=20, metric='cosine', algorithm='brute',
        weights=lambda d: np.exp((1 - d) / 0.07)).fit(bank.numpy(), bank_y.numpy())
    expected = reference.predict(query.numpy())
    assert (ours.numpy() == expected).mean() > 0.995
    acc = knn_accuracy(bank, bank_y, query, query_y)
    assert acc == pytest.approx((expected == query_y.numpy()).mean() * 100, abs=0.5)
    assert acc > 85  # digits are easy for pixel k-NN


def test_chunked_knn_equals_one_shot(digits):
    x, y = digits
    one = knn_predict(x[:1000], y[:1000], x[1000:], 10)
    chunked = knn_predict(x[:1000], y[:1000], x[1000:], 10, query_chunk=37, bank_chunk=64)
    assert torch.equal(one, chunked)


def test_knn_is_chance_on_shuffled_labels(digits):
    x, y = digits
    # Similar queries share neighbours, so one shuffle's accuracy varies a lot (5-18% seen):
    # average over shuffles.
    accs = []
    for seed in range(12):
        shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))]
        accs.append(knn_accuracy(x[:1200], shuffled[:1200], x[1200:], y[1200:]))
    assert abs(np.mean(accs) - 10) < 2.5  # chance is 10%


def test_linear_probe_learns_and_is_chance_on_noise(digits):
    x, y = digits
    assert linear_probe_accuracy(x[:1200], y[:1200], x[1200:], y[1200:]) > 85
    noise = torch.randn_like(x)
    assert linear_probe_accuracy(noise[:1200], y[:1200], noise[1200:], y[1200:]) < 20


def test_fashion_mnist_tool_writes_the_customdataset_layout(tmp_path):
    out = str(tmp_path / 'fm')
    subprocess.run([sys.executable, 'tools/dataset_converters/prepare_fashion_mnist.py',
                    '--out', out, '--train-per-class', '7', '--test-per-class', '3'],
                   cwd=ROOT, check=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    for split, n in (('train', 7), ('test', 3)):
        assert sorted(os.listdir(osp.join(out, split))) == list(CLASSES)
        assert all(len(os.listdir(osp.join(out, split, c))) == n for c in CLASSES)
    from mmpretrain.datasets import CustomDataset
    dataset = CustomDataset(data_root=out, data_prefix='train',
                            pipeline=[dict(type='LoadImageFromFile')])
    assert len(dataset) == 70
    labels = [dataset.get_data_info(i)['gt_label'] for i in range(len(dataset))]
    assert np.bincount(labels).tolist() == [7] * 10
    sample = dataset[0]
    assert sample['img'].shape == (28, 28, 3)


def test_shipped_subset_is_real_fashion_mnist(tmp_path):
    data, source = load_fashion_mnist(str(tmp_path))  # an empty folder -> the shipped subset
    assert 'shipped' in source
    images, labels = data['train']
    assert images.shape == (4000, 28, 28) and np.bincount(labels).tolist() == [400] * 10
    if osp.exists('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz'):
        full, _ = load_fashion_mnist()
        # the subset is the first 400 of each class, in order
        first = np.concatenate([np.where(full['train'][1] == c)[0][:400] for c in range(10)])
        assert np.array_equal(full['train'][0][np.sort(first)], images)


def test_knn_hook_logs_during_pretraining(tmp_path):
    from helpers import shrink_pretrain_cfg
    images = write_images(str(tmp_path / 'img'), num=6, size=28, with_classes=True)
    path = osp.join(ROOT,
                    'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')
    raw = Config.fromfile(path)
    [hook] = [h for h in raw.custom_hooks if h.type == 'KNNEvaluationHook']
    cfg = shrink_pretrain_cfg(raw, images, str(tmp_path / 'work'), img=28)
    for key in ('bank_dataloader', 'query_dataloader'):
        hook[key].dataset.update(data_root=images, data_prefix='')
        hook[key].update(num_workers=0, batch_size=4)
    hook.update(interval=1, before_train=True)
    cfg.custom_hooks = [hook]
    runner = Runner.from_cfg(cfg)
    runner.train()
    [knn] = [h for h in runner.hooks if type(h).__name__ == 'KNNEvaluationHook']
    assert [epoch for epoch, _ in knn.history] == [0, 1]
    for _, results in knn.history:
        assert set(results) == {'cls', 'patch_mean'}
        assert all(0 <= v <= 100 for v in results.values())
    assert 'knn/cls_top1' in runner.message_hub.log_scalars


def test_knn_predict_computes_on_the_features_device(digits):
    # 'meta' tensors stand in for a GPU here: any buffer allocated on the CPU instead of the
    # features' device makes torch.cat / scatter_add_ fail with a device mismatch.
    x, y = digits
    bank, labels, queries = x[:100].to('meta'), y[:100].to('meta'), x[100:130].to('meta')
    pred = knn_predict(bank, labels, queries, num_classes=10, k=5, bank_chunk=32)
    assert pred.device.type == 'meta' and pred.shape == (30, )
    # CPU labels with device features are moved, not mixed
    assert knn_predict(bank, y[:100], queries, 10, k=5).device.type == 'meta'


def _tiny_swin():
    from mmpretrain.models import SwinTransformer
    torch.manual_seed(0)
    swin = SwinTransformer(arch=dict(embed_dims=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1]),
                           img_size=64, out_indices=(3, ), pad_small_map=True)
    swin.eval()  # (mmpretrain's Swin.train() returns None: no chaining)
    return swin


def test_swin_features_are_its_pooled_last_stage():
    from repre_mm.evaluation.knn import backbone_features, default_kinds
    swin = _tiny_swin()
    images = [torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(i))
              for i in range(2)]
    feats = backbone_features(swin, images)
    assert default_kinds(swin) == ('patch_mean', ) and set(feats) == {'patch_mean'}
    with torch.no_grad():
        expected = torch.cat([swin(im)[-1].mean(dim=(2, 3)) for im in images])
    assert feats['patch_mean'].shape == (6, 128)
    assert torch.allclose(feats['patch_mean'], expected, atol=1e-6)
    with pytest.raises(ValueError, match='not one of'):
        backbone_features(swin, images, kinds=['cls'])  # no CLS token: said, not guessed


def test_bf16_autocast_extraction_is_close_to_fp32():
    from repre_mm.evaluation.knn import backbone_features
    from helpers import tiny_vit
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    vit = MODELS.build(tiny_vit(type='VisionTransformer'))
    vit.eval()
    images = [torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))]
    fp32 = backbone_features(vit, images)
    bf16 = backbone_features(vit, images, amp_dtype=torch.bfloat16)
    for kind in ('cls', 'patch_mean'):
        assert bf16[kind].dtype == torch.float32
        assert not torch.equal(bf16[kind], fp32[kind])  # autocast really ran in bf16
        cos = torch.nn.functional.cosine_similarity(bf16[kind], fp32[kind], dim=1)
        assert cos.min() > 0.99, cos


def test_block_tokens_are_what_mmpretrain_vit_returns_for_that_block():
    """repre_mm.evaluation.tokens.block_tokens (the one token reader of the k-NN features, the
    dense probe and repre_mm.apis) == mmpretrain's own ``out_indices`` / ``out_type='raw'``
    output: block i before any norm, 'final' after the final norm; the hook is removed after."""
    from repre_mm.evaluation.knn import backbone_features
    from repre_mm.evaluation.tokens import FINAL, block_tokens, patch_maps
    from helpers import PATCH, tiny_vit
    from mmpretrain.registry import MODELS
    torch.manual_seed(0)
    vit = MODELS.build(dict(tiny_vit(type='VisionTransformer'), out_type='raw',
                            out_indices=(1, 3)))
    vit.eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), block_tokens(vit, 1) as block1, block_tokens(vit, 3) as block3, \
            block_tokens(vit, FINAL) as final:
        raw1, raw_final = vit(images)
    torch.testing.assert_close(block1[0], raw1, rtol=0, atol=0)
    torch.testing.assert_close(final[0], raw_final, rtol=0, atol=0)
    torch.testing.assert_close(vit.ln1(block3[0]), raw_final, rtol=0, atol=0)
    assert not torch.allclose(block3[0], raw_final)  # an index is the block, not the norm
    assert all(not layer._forward_hooks for layer in vit.layers)
    # the k-NN / apis features are read from the same final tokens
    feats = backbone_features(vit, [images], ('cls', 'patch_mean', 'patch'))
    h = 32 // PATCH
    assert feats['patch'].shape == (2, vit.embed_dims, h, h)
    torch.testing.assert_close(feats['cls'], raw_final[:, 0])
    torch.testing.assert_close(feats['patch'], patch_maps(vit, raw_final, 32))
    torch.testing.assert_close(feats['patch'].mean((2, 3)), feats['patch_mean'])
    with pytest.raises(ValueError, match='out of range: the backbone has 4 blocks'):
        with block_tokens(vit, 4):
            pass
