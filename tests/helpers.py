"""Small models and data for the tests: a 4-block ViT on 32x32 views runs a step in ~50 ms."""
import copy

import torch

PATCH = 8
DIMS = 64


def tiny_vit(img_size=32, patch_size=PATCH, depth=4, dims=DIMS, heads=4, type='MoCoV3ViT'):
    return dict(
        type=type,
        arch=dict(embed_dims=dims, num_layers=depth, num_heads=heads,
                  feedforward_channels=2 * dims),
        img_size=img_size,
        patch_size=patch_size,
        **(dict(stop_grad_conv1=True) if type == 'MoCoV3ViT' else {}))


def _mlp(in_ch, out_ch, layers):
    return dict(type='NonLinearNeck', in_channels=in_ch, hid_channels=2 * DIMS,
                out_channels=out_ch, num_layers=layers, with_bias=False, with_last_bn=True,
                with_last_bn_affine=False, with_last_bias=False, with_avg_pool=False,
                norm_cfg=dict(type='BN1d'))


def tiny_mocov3(**vit_kwargs):
    return dict(
        type='MoCoV3',
        base_momentum=0.01,
        backbone=tiny_vit(**vit_kwargs),
        neck=_mlp(vit_kwargs.get('dims', DIMS), 32, 3),
        head=dict(type='MoCoV3Head', predictor=_mlp(32, 32, 2),
                  loss=dict(type='CrossEntropyLoss', loss_weight=0.4), temperature=0.2),
        data_preprocessor=dict(type='SelfSupDataPreprocessor', mean=[127.5] * 3,
                               std=[64.] * 3, to_rgb=True))


def tiny_simclr():
    return dict(type='SimCLR', backbone=tiny_vit(), neck=_mlp(DIMS, 32, 2),
                head=dict(type='ContrastiveHead', loss=dict(type='CrossEntropyLoss'),
                          temperature=0.1),
                data_preprocessor=tiny_mocov3()['data_preprocessor'])


def tiny_byol():
    return dict(type='BYOL', base_momentum=0.01, backbone=tiny_vit(), neck=_mlp(DIMS, 32, 2),
                head=dict(type='LatentPredictHead', predictor=_mlp(32, 32, 2),
                          loss=dict(type='CosineSimilarityLoss')),
                data_preprocessor=tiny_mocov3()['data_preprocessor'])


K_DINO = 16


def tiny_dino():
    return dict(
        type='DINO', base_momentum=0.004,
        backbone=tiny_vit(type='VisionTransformer', img_size=32),
        neck=dict(type='DINOProjector', in_channels=DIMS, out_channels=K_DINO,
                  hidden_channels=32, bottleneck_channels=8),
        head=dict(type='DINODistillationHead', out_channels=K_DINO),
        data_preprocessor=tiny_mocov3()['data_preprocessor'])


def tiny_repre(levels=(1, 3), loss_weight=1.0, framework=None, **kwargs):
    return dict(type='RePre', framework=framework or tiny_mocov3(), levels=levels,
                rec_head=dict(type='RePreReconstructionHead', loss_weight=loss_weight), **kwargs)


def views(batch=4, size=32, num=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, size, size, generator=g) for _ in range(num)]


def clone_cfg(cfg):
    return copy.deepcopy(cfg)


def write_images(folder, num=4, size=40, with_classes=False, seed=0):
    """Random RGB JPEGs: num per class folder (2 classes) or flat."""
    import os
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    subdirs = ['class_a', 'class_b'] if with_classes else ['']
    for sub in subdirs:
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for i in range(num):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            cv2.imwrite(os.path.join(folder, sub, f'{i}.jpg'), img)
    return folder


def _walk(obj, fn):
    if isinstance(obj, dict):
        fn(obj)
        for v in obj.values():
            _walk(v, fn)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _walk(v, fn)


def shrink_pretrain_cfg(cfg, data_root, work_dir, img=32, dims=32):
    """A GPU recipe made to run one CPU iteration in seconds: 12 narrow blocks (so every level
    index of the recipe stays valid), 32x32 crops, batch 2, synthetic images (also for the k-NN
    hook's bank and queries). The recipe's own custom_hooks stay; ``adapt_to_machine`` turns
    AMP (CUDA fp16) into fp32, and mmengine reverts SyncBN outside distributed runs."""
    from repre_mm.utils.launch import adapt_to_machine, set_dataloader_defaults
    framework = cfg.model.framework if cfg.model.type == 'RePre' else cfg.model
    backbone = framework.backbone
    if backbone.type == 'SwinTransformer':
        backbone.arch = dict(embed_dims=dims // 2, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1])
        backbone.pad_small_map = True  # 32x32 crops give stage maps smaller than the window
        framework.neck.in_channels = dims // 2 * 8
    else:
        backbone.arch = dict(embed_dims=dims, num_layers=12, num_heads=2,
                             feedforward_channels=2 * dims)
        framework.neck.in_channels = dims
    backbone.img_size = img
    for mlp in (framework.neck, framework.head.get('predictor', {})):
        if 'hid_channels' in mlp:
            mlp.hid_channels = 2 * dims
    if framework.neck.type == 'DINOProjector':
        framework.neck.update(hidden_channels=2 * dims, bottleneck_channels=16, out_channels=64)
        framework.head.out_channels = 64

    def small_crop(t):
        if t.get('type') in ('RandomResizedCrop', 'RandomCrop'):
            key = 'scale' if 'scale' in t else 'crop_size'
            t[key] = img // 2 if t[key] == 96 else img  # DINO's 96-pixel local crops stay smaller

    _walk(cfg.train_dataloader.dataset.pipeline, small_crop)
    cfg.train_dataloader.dataset = dict(
        type='CustomDataset', data_root=data_root, with_label=False,
        pipeline=cfg.train_dataloader.dataset.pipeline)
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    for hook in cfg.get('custom_hooks', []):
        for key in ('bank_dataloader', 'query_dataloader'):
            if key in hook:
                hook[key].dataset.update(data_root=data_root, data_prefix='')
                hook[key].update(batch_size=4, num_workers=0, persistent_workers=False)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    set_dataloader_defaults(cfg)
    adapt_to_machine(cfg)
    return cfg


def tiny_coco(root, num=2):
    """A COCO-format dataset: num 128x96 images, two objects each (box + polygon)."""
    import json
    import os
    import cv2
    import numpy as np
    os.makedirs(os.path.join(root, 'img'))
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(num):
        cv2.imwrite(os.path.join(root, 'img', f'{i}.jpg'),
                    rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
        images.append(dict(id=i, file_name=f'{i}.jpg', width=128, height=96))
        for j, (x, y) in enumerate(((10, 10), (60, 40))):
            w = h = 30
            annotations.append(dict(
                id=10 * i + j, image_id=i, category_id=1 + j, iscrowd=0, area=w * h,
                bbox=[x, y, w, h], segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    ann = dict(images=images, annotations=annotations,
               categories=[dict(id=1, name='person'), dict(id=2, name='bicycle')])
    with open(os.path.join(root, 'ann.json'), 'w') as f:
        json.dump(ann, f)
    return root


def tiny_ade20k(root, num=2, splits=('training', )):
    """ADE20K's layout: images/<split>/*.jpg and annotations/<split>/*.png (labels 0-150)."""
    import os
    import cv2
    import numpy as np
    rng = np.random.default_rng(0)
    for split in splits:
        for sub in (f'images/{split}', f'annotations/{split}'):
            os.makedirs(os.path.join(root, sub))
        for i in range(num):
            cv2.imwrite(os.path.join(root, f'images/{split}', f'{i}.jpg'),
                        rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
            cv2.imwrite(os.path.join(root, f'annotations/{split}', f'{i}.png'),
                        rng.integers(0, 151, (64, 96), dtype=np.uint8))
    return root
