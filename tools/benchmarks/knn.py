"""Offline k-NN evaluation (DINO protocol: k=20, cosine, votes exp(s/0.07)) of a checkpoint.

The model comes from CONFIG (a pre-training config: RePre or baseline) and CHECKPOINT; the bank
and query images from the config's ``knn_bank_dataloader`` / ``knn_query_dataloader``, or from
folders given by path. ImageNet, e.g.:

    python tools/benchmarks/knn.py configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py \
        work_dirs/repre/epoch_300.pth --dataset-type ImageNet \
        --bank data/imagenet --bank-split train --query data/imagenet --query-split val

Features (CLS token and mean patch token) are extracted batch by batch; the k-NN compares
queries with the bank in chunks, so a bank of ImageNet size need not fit one similarity matrix.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmpretrain.registry import MODELS  # noqa: E402
from repre_mm.evaluation import FEATURE_KINDS, features_from_dataloader, knn_accuracy  # noqa
from repre_mm.utils.checkpoint import load_strict, load_weights  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='k-NN evaluation of a pre-trained encoder')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--bank', help='bank images (data_root); default: the config\'s')
    parser.add_argument('--query', help='query images (data_root); default: the config\'s')
    parser.add_argument('--dataset-type', default='CustomDataset',
                        help='CustomDataset (class folders) or ImageNet (with meta/ files)')
    parser.add_argument('--bank-split', default='train')
    parser.add_argument('--query-split', default='val')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--workers', type=int, default=4)
    parser.add_argument('--k', type=int, default=20)
    parser.add_argument('--temperature', type=float, default=0.07)
    parser.add_argument('--kinds', nargs='+', default=list(FEATURE_KINDS))
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def folder_loader(args, root, split):
    if not osp.isdir(root):
        raise FileNotFoundError(f'{root} does not exist: pass the folder that holds the images.')
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='ResizeEdge', scale=args.img_size * 8 // 7, edge='short'),
        dict(type='CenterCrop', crop_size=args.img_size),
        dict(type='PackInputs'),
    ]
    if args.dataset_type == 'ImageNet':
        dataset = dict(type='ImageNet', data_root=root, split=split, pipeline=pipeline)
    else:
        dataset = dict(type=args.dataset_type, data_root=root, data_prefix=split,
                       pipeline=pipeline)
    return dict(batch_size=args.batch_size, num_workers=args.workers,
                sampler=dict(type='DefaultSampler', shuffle=False),
                collate_fn=dict(type='default_collate'), dataset=dataset)


def main():
    args = parse_args()
    quiet_mmengine()
    init_default_scope('mmpretrain')  # dataloaders are built outside a Runner
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    # as mmengine's Runner does: the top-level data_preprocessor belongs to the model
    cfg.model.setdefault('data_preprocessor', cfg.get('data_preprocessor'))
    model = MODELS.build(cfg.model)
    load_strict(model, load_weights(args.checkpoint), source=args.checkpoint)
    model.eval()

    loaders = []
    for root, split, key in ((args.bank, args.bank_split, 'knn_bank_dataloader'),
                             (args.query, args.query_split, 'knn_query_dataloader')):
        if root is not None:
            loader_cfg = folder_loader(args, root, split)
        elif key in cfg:
            loader_cfg = cfg[key]
        else:
            raise ValueError(f'{args.config} has no `{key}`: pass --bank / --query folders.')
        loaders.append(Runner.build_dataloader(loader_cfg))

    bank, bank_labels = features_from_dataloader(model, loaders[0], args.kinds)
    queries, query_labels = features_from_dataloader(model, loaders[1], args.kinds)
    for kind in args.kinds:
        acc = knn_accuracy(bank[kind], bank_labels, queries[kind], query_labels, args.k,
                           args.temperature)
        print(f'k-NN {kind}: top-1 {acc:.2f}% (k={args.k}, T={args.temperature}, '
              f'bank {len(bank_labels)}, queries {len(query_labels)})')


if __name__ == '__main__':
    with torch.no_grad():
        main()
