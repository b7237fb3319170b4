"""Pre-training on your own images: the template config and the statistics tool."""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner

ROOT = osp.dirname(osp.dirname(__file__))
TEMPLATE = osp.join(
    ROOT, 'configs/custom/repre_mocov3_vit-small-p16_1xb64-coslr-100e_image-folder.py')


def write_folder(root, splits=('train', 'val'), per_class=4, size=48):
    import cv2
    rng = np.random.default_rng(0)
    pixels = []
    for split in splits:
        for c, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
            os.makedirs(osp.join(root, split, f'class{c}'), exist_ok=True)
            for i in range(per_class):
                image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                image[size // 4:3 * size // 4, size // 4:3 * size // 4] = colour[::-1]
                path = osp.join(root, split, f'class{c}', f'{i}.png')
                cv2.imwrite(path, image)
                if split == 'train':
                    pixels.append(image[..., ::-1].reshape(-1, 3))
    pixels = np.concatenate(pixels).astype(np.float64)
    return pixels.mean(0), pixels.std(0)


def test_image_folder_stats_tool(tmp_path):
    mean, std = write_folder(str(tmp_path / 'data'))
    proc = subprocess.run([sys.executable, 'tools/analysis/image_folder_stats.py',
                           str(tmp_path / 'data' / 'train')], cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads(proc.stdout.splitlines()[0])
    assert stats['images'] == 8 and stats['median_short_side'] == 48 and stats['colour']
    np.testing.assert_allclose(stats['mean'], mean, atol=0.01)
    np.testing.assert_allclose(stats['std'], std, atol=0.01)
    assert proc.stdout.splitlines()[1].startswith('data_preprocessor = dict(mean=[')


def test_template_trains_on_a_generated_folder(tmp_path):
    """The template as a user fills it in (data root, size, statistics, batch, epochs), with a
    narrow ViT so that it runs on a CPU: pre-training, k-NN on the labelled split, checkpoint."""
    from repre_mm.utils.launch import adapt_to_machine, set_dataloader_defaults
    data = str(tmp_path / 'data')
    write_folder(data)
    text = open(TEMPLATE).read()
    for key, value in (('data_root', repr(data + '/')), ('img_size', '32'),
                       ('batch_size', '4'), ('max_epochs', '2'), ('warmup_epochs', '1')):
        text, n = re.subn(rf'^{key} = .*$', f'{key} = {value}', text, flags=re.M)
        assert n == 1, key  # the template keeps these as one-line settings
    text = text.replace("_base_ = '../repre/", f"_base_ = '{ROOT}/configs/repre/")
    user = tmp_path / 'my_config.py'
    user.write_text(text)
    cfg = Config.fromfile(str(user))
    framework = cfg.model.framework
    framework.backbone.arch = dict(embed_dims=32, num_layers=12, num_heads=2,
                                   feedforward_channels=64)
    framework.neck.update(in_channels=32, hid_channels=64)
    framework.head.predictor.hid_channels = 64
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)
    for hook in cfg.custom_hooks:
        if hook.type == 'KNNEvaluationHook':
            for loader in (hook.bank_dataloader, hook.query_dataloader):
                loader.num_workers = 0
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    set_dataloader_defaults(cfg)
    adapt_to_machine(cfg)  # AMP (CUDA fp16) -> fp32 on this machine
    runner = Runner.from_cfg(cfg)
    runner.train()
    logged = runner.message_hub.log_scalars
    assert torch.isfinite(torch.tensor(logged['train/loss'].current()))
    assert logged['train/loss_rec'].current() > 0
    assert 0 <= logged['knn/cls_top1'].current() <= 100  # the k-NN hook ran on val
    assert osp.exists(osp.join(cfg.work_dir, 'epoch_2.pth'))
