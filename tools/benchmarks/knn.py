"""Offline k-NN evaluation (DINO protocol: k=20, cosine, votes exp(s/0.07)) of a checkpoint.

The model comes from CONFIG (a pre-training config: RePre or baseline) and CHECKPOINT (a
checkpoint of CONFIG, every key matching, or a bare backbone written by
tools/model_converters/extract_backbone.py: k-NN reads the backbone alone); the bank and query
images from the config's ``knn_bank_dataloader`` / ``knn_query_dataloader``, or from
folders given by path. ImageNet on 8 GPUs, e.g.:

    python -m torch.distributed.run --nproc_per_node=8 tools/benchmarks/knn.py \
        configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py \
        work_dirs/repre/epoch_300.pth --launcher pytorch --amp --dataset-type ImageNet \
        --bank data/imagenet --bank-split train --query data/imagenet --query-split val

Features (ViT: CLS token and mean patch token; Swin: its pooled last stage) are extracted on
``--device`` (a GPU when there is one), optionally under fp16 / bf16 autocast, with a progress
bar and ETA on stderr. With ``--launcher pytorch|slurm`` each rank extracts and keeps its shard
of the bank, the queries are gathered, each rank finds the k nearest of all queries in its shard
and the candidates are merged (mmengine.dist), so the numbers are those of one process while a
rank holds ~1/W of the bank. The k-NN compares queries with the bank in chunks on the same
device, so a bank of ImageNet size need not fit one similarity matrix. ``--out FILE`` also
writes the results and timings as JSON.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001  (compat patches first)
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dist import get_rank, get_world_size, init_dist  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from repre_mm.apis import init_model  # noqa: E402
from repre_mm.evaluation.knn import (default_kinds,  # noqa: E402
                                     feature_shard_from_dataloader, features_from_dataloader,
                                     knn_accuracy)
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
    parser.add_argument('--batch-size', type=int, default=256, help='per process')
    parser.add_argument('--workers', type=int, default=4, help='loader workers per process')
    parser.add_argument('--k', type=int, default=20)
    parser.add_argument('--temperature', type=float, default=0.07)
    parser.add_argument('--kinds', nargs='+',
                        help='cls and / or patch_mean; default: all the backbone has (Swin: '
                        'patch_mean, the pooled last stage)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='where the model runs and the k-NN is computed (default: cuda '
                        'when available)')
    parser.add_argument('--amp', action='store_true',
                        help='autocast the extraction: fp16 on GPU, bf16 on CPU by default')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'])
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='several processes: each extracts its shard of the images')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--out', help='also write the results and timings to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if args.amp and args.amp_dtype is None:
        args.amp_dtype = 'float16' if args.device.startswith('cuda') else 'bfloat16'
    return args


def folder_loader(args, root, split):
    """A loader config for a folder of images: resize to 8/7 of the crop, centre crop."""
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
                pin_memory=args.device.startswith('cuda'),
                collate_fn=dict(type='default_collate'), dataset=dataset)


def setup_device(args) -> torch.device:
    """Starts the process group (NCCL on GPUs, gloo on CPU) and returns this rank's device."""
    if args.launcher != 'none':
        if 'LOCAL_RANK' not in os.environ:
            os.environ['LOCAL_RANK'] = str(args.local_rank)
        init_dist(args.launcher, backend='nccl' if args.device.startswith('cuda') else 'gloo')
    device = torch.device(args.device)
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', torch.cuda.current_device())  # init_dist set LOCAL_RANK's
    return device


def build_loaders(args, cfg):
    loaders = []
    for root, split, key in ((args.bank, args.bank_split, 'knn_bank_dataloader'),
                             (args.query, args.query_split, 'knn_query_dataloader')):
        if root is not None:
            loader_cfg = folder_loader(args, root, split)
        elif key in cfg:
            loader_cfg = cfg[key].copy()
        else:
            raise ValueError(f'{args.config} has no `{key}`: pass --bank / --query folders.')
        # Each rank gets indices r, r + W, ...: the layout the bank shards and the gathered
        # queries rely on.
        loader_cfg['sampler'] = dict(type='DefaultSampler', shuffle=False, round_up=True)
        loaders.append(Runner.build_dataloader(loader_cfg))
    return loaders


def main():
    args = parse_args()
    quiet_mmengine()
    device = setup_device(args)
    init_default_scope('mmpretrain')  # dataloaders are built outside a Runner
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)  # for the model and the config's loaders
    model = init_model(cfg, args.checkpoint, device)
    kinds = tuple(args.kinds) if args.kinds else default_kinds(model.backbone)
    amp_dtype = getattr(torch, args.amp_dtype) if args.amp else None

    loaders = build_loaders(args, cfg)
    timings = {}
    feats = []
    for name, loader in zip(('bank', 'queries'), loaders):
        if get_rank() == 0 and not args.no_progress:
            print(f'extracting {name}: {len(loader.dataset)} images on {get_world_size()} '
                  f'process(es)', file=sys.stderr)
        start = time.perf_counter()
        extract = feature_shard_from_dataloader if name == 'bank' else features_from_dataloader
        feats.append(extract(model, loader, kinds, amp_dtype, progress=not args.no_progress))
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        timings[name] = time.perf_counter() - start
    bank, (queries, query_labels) = feats

    start = time.perf_counter()
    results = {kind: knn_accuracy(bank.feats[kind], bank.labels, queries[kind], query_labels,
                                  args.k, args.temperature, bank_indices=bank.indices)
               for kind in kinds}
    timings['knn'] = time.perf_counter() - start
    if get_rank() != 0:
        return
    for kind, acc in results.items():
        print(f'k-NN {kind}: top-1 {acc:.2f}% (k={args.k}, T={args.temperature}, '
              f'bank {bank.size}, queries {len(query_labels)})')
    images = bank.size + len(query_labels)
    summary = dict(
        top1=results, k=args.k, temperature=args.temperature, bank=bank.size,
        queries=len(query_labels), device=str(device), world_size=get_world_size(),
        amp_dtype=args.amp_dtype if args.amp else None, img_size=args.img_size,
        batch_size=args.batch_size, seconds=timings,
        # extraction (loading included) of all images over all processes, per 1,000 images
        extract_s_per_1000_images=(timings['bank'] + timings['queries']) / images * 1000)
    print(f'extraction: {summary["extract_s_per_1000_images"]:.2f} s per 1000 images '
          f'({images} images, {get_world_size()} process(es), {device.type}); k-NN '
          f'{timings["knn"]:.2f} s')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(summary, f, indent=1)


if __name__ == '__main__':
    with torch.no_grad():
        main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # torch warns about a group left open
