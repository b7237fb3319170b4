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


def scene_seg_folder(root, num_classes=4, counts=(('train', 16), ('val', 4), ('test', 8)),
                     sizes=((64, 48), (48, 64), (56, 40)), seed=0):
    """A semantic-segmentation dataset in mmseg's folder layout that an encoder can learn:
    random rectangles and ellipses of ``num_classes`` classes, each class its own colour and
    stripe texture (plus noise), on images of several sizes, landscape and portrait (w, h),
    JPEG and PNG. Labels hold the class ids; a 1-pixel band around every shape is 255
    (ignore), as in real annotations. Returns ``root``."""
    import os
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, (num_classes, 3))
    for split, num in counts:
        for sub in ('img_dir', 'ann_dir'):
            os.makedirs(os.path.join(root, sub, split), exist_ok=True)
        for i in range(num):
            w, h = sizes[i % len(sizes)]
            label = np.zeros((h, w), np.uint8)  # class 0 is the background class
            for _ in range(int(rng.integers(2, 5))):
                c = int(rng.integers(1, num_classes))
                x0, y0 = int(rng.integers(0, w - 12)), int(rng.integers(0, h - 12))
                x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
                if rng.random() < 0.5:
                    cv2.rectangle(label, (x0, y0), (x1, y1), c, -1)
                else:
                    box = (((x0 + x1) / 2, (y0 + y1) / 2), (x1 - x0, y1 - y0), 0)
                    cv2.ellipse(label, box, c, -1)
            yy, xx = np.mgrid[:h, :w]
            image = colours[label].astype(np.float64)
            stripes = np.sin((xx * (1 + label) + yy * (label % 2)) * 0.9)  # class texture
            image += 30 * stripes[..., None] + rng.normal(0, 12, image.shape)
            edges = cv2.morphologyEx(label, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
            label[edges] = 255
            ext = '.jpg' if i % 3 == 0 else '.png'
            cv2.imwrite(os.path.join(root, 'img_dir', split, f'{split}{i:03d}{ext}'),
                        np.clip(image, 0, 255).astype(np.uint8)[..., ::-1])
            cv2.imwrite(os.path.join(root, 'ann_dir', split, f'{split}{i:03d}.png'), label)
    with open(os.path.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(f'class{c}' for c in range(num_classes)) + '\n')
    return root


def run_transfer_benchmark(tool, out, data, *extra, timeout=900):
    """``tools/benchmarks/<tool>.py --quick --data DATA --out OUT *extra`` in a subprocess
    (seg_transfer, det_transfer); returns (its results.json, its stdout): with --first-seed n,
    results_from_seed<n>.json (seeds 0.. keep their results.json)."""
    import json
    import os
    import os.path as osp
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, f'tools/benchmarks/{tool}.py', '--quick', '--data', data, '--out', out,
         *extra], cwd=root, env=dict(os.environ, PYTHONPATH=root), capture_output=True,
        text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    first = int(extra[list(extra).index('--first-seed') + 1]) if '--first-seed' in extra else 0
    name = 'results.json' if first == 0 else f'results_from_seed{first}.json'
    with open(osp.join(out, name)) as f:
        return json.load(f), proc.stdout


def lr_by_iteration(config_path, iters):
    """The learning rate of every iteration 0..iters-1 under a config's ``param_scheduler``
    and ``optim_wrapper.optimizer.lr`` (one SGD parameter group), as mmengine steps it."""
    from mmengine.config import Config
    from mmengine.optim.scheduler import _ParamScheduler  # noqa: F401  (registers them)
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = Config.fromfile(config_path)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in copy.deepcopy(cfg.param_scheduler)]
    lrs = []
    for _ in range(iters):
        lrs.append(optimizer.param_groups[0]['lr'])
        for s in schedulers:
            s.step()
    return lrs


def trainable_parameters(config, scope):
    """{name: shape} of the parameters a run of ``config`` trains: the model built and
    initialised as tools/train.py does (its ``init_cfg`` checkpoints loaded), in ``scope``
    (``'mmdet'`` or ``'mmseg'``)."""
    import importlib

    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    importlib.import_module(f'{scope}.models')  # registers the scope's models
    cfg = Config.fromfile(config)
    with DefaultScope.overwrite_default_scope(scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return {name: tuple(p.shape) for name, p in model.named_parameters() if p.requires_grad}
