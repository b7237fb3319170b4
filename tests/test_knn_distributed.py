"""k-NN under DDP: 2 CPU processes (gloo) give the numbers of 1 process, same data, same checkpoint.

mmengine's DefaultSampler shards every loader by rank. Scoring each rank's shard of the queries
against its shard of the bank, and logging rank 0's figure, is what KNNEvaluationHook did before:
a plausible number computed on half the data. Every sample must count once: the queries are
gathered, the bank stays sharded and the ranks' nearest neighbours are merged
(tests/test_knn_sharded.py checks that merge bit for bit).
"""
import json
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import write_images

ROOT = osp.dirname(osp.dirname(__file__))
TINY = osp.join(ROOT, 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')


def _image_folders(root):
    """A bank of 13 and queries of 9 labelled images: odd sizes, so that the 2-rank shards are
    padded (DefaultSampler repeats the first images) and the padding must be dropped again."""
    bank = write_images(osp.join(root, 'bank'), num=7, size=28, with_classes=True, seed=1)
    os.remove(osp.join(bank, 'class_b', '6.jpg'))
    query = write_images(osp.join(root, 'query'), num=5, size=28, with_classes=True, seed=2)
    os.remove(osp.join(query, 'class_a', '4.jpg'))
    return bank, query


def _checkpoint(path):
    """The tiny RePre model of TINY with seeded random weights, as a checkpoint file."""
    import repre_mm  # noqa: F401
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(TINY)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def _loader(root):
    return dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
                collate_fn=dict(type='default_collate'),
                dataset=dict(type='CustomDataset', data_root=root, data_prefix='',
                             pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))


def _hook_numbers(folders, checkpoint, wrap=None):
    """What KNNEvaluationHook logs before training, driven like a Runner drives it.

    The hook builds its loaders with the Runner's own ``build_dataloader`` (which shards by
    rank under DDP) and reads the model through the DDP wrapper, as in a distributed run.
    """
    import repre_mm  # noqa: F401  (registers the hook in a spawned process)
    from mmengine.config import Config
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmpretrain.registry import HOOKS, MODELS
    init_default_scope('mmpretrain')
    model = MODELS.build(Config.fromfile(TINY).model)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)['state_dict'])
    hub = MessageHub.get_instance(f'knn_test_{os.getpid()}')
    runner = SimpleNamespace(
        model=wrap(model) if wrap else model, build_dataloader=Runner.build_dataloader,
        message_hub=hub, logger=MMLogger.get_instance(f'knn_test_{os.getpid()}'),
        visualizer=SimpleNamespace(add_scalars=lambda *args, **kwargs: None))
    hook = HOOKS.build(dict(type='KNNEvaluationHook', bank_dataloader=_loader(folders[0]),
                            query_dataloader=_loader(folders[1]), k=5, before_train=True))
    hook.before_train(runner)
    [(epoch, results)] = hook.history
    return dict(results, logged=hub.get_scalar('knn/cls_top1').current())


def _hook_worker(rank, world, port, folders, checkpoint, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    from mmengine.registry import MODEL_WRAPPERS

    def wrap(model):  # what the Runner wraps a model in for CPU DDP (repre_mm.compat)
        return MODEL_WRAPPERS.build(dict(type='CPUDistributedDataParallel', module=model,
                                         device_ids=None, broadcast_buffers=False))

    numbers = _hook_numbers(folders, checkpoint, wrap=wrap)
    with open(f'{out}.{rank}', 'w') as f:
        json.dump(numbers, f)
    dist.barrier()
    dist.destroy_process_group()


def test_knn_hook_logs_the_single_process_number_under_ddp(tmp_path):
    folders = _image_folders(str(tmp_path))
    checkpoint = _checkpoint(str(tmp_path / 'model.pth'))
    single = _hook_numbers(folders, checkpoint)
    out = str(tmp_path / 'ranks')
    mp.spawn(_hook_worker, args=(2, 29100 + os.getpid() % 800, folders, checkpoint, out),
             nprocs=2, join=True)
    ranks = []
    for rank in range(2):
        with open(f'{out}.{rank}') as f:
            ranks.append(json.load(f))
    assert set(single) == {'cls', 'patch_mean', 'logged'}
    assert ranks[0] == single and ranks[1] == single, (single, ranks)


def _knn_tool(args, nproc=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1', **(env_extra or {}))
    launch = ([sys.executable, '-m', 'torch.distributed.run', f'--nproc_per_node={nproc}',
               f'--master_port={29900 + os.getpid() % 90}'] if nproc else [sys.executable])
    out = subprocess.run(launch + ['tools/benchmarks/knn.py'] + args, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def test_knn_tool_with_two_processes_equals_one(tmp_path):
    bank, query = _image_folders(str(tmp_path))
    checkpoint = _checkpoint(str(tmp_path / 'model.pth'))
    common = [TINY, checkpoint, '--bank', bank, '--bank-split', '', '--query', query,
              '--query-split', '', '--img-size', '28', '--workers', '0', '--batch-size', '2',
              '--k', '5', '--device', 'cpu']
    one = _knn_tool(common + ['--out', str(tmp_path / 'one.json')])
    two = _knn_tool(common + ['--launcher', 'pytorch', '--out', str(tmp_path / 'two.json')],
                    nproc=2)
    with open(tmp_path / 'one.json') as f:
        one_json = json.load(f)
    with open(tmp_path / 'two.json') as f:
        two_json = json.load(f)
    assert (one_json['world_size'], two_json['world_size']) == (1, 2)
    assert one_json['bank'] == two_json['bank'] == 13
    assert one_json['queries'] == two_json['queries'] == 9
    assert one_json['top1'] == two_json['top1']
    assert set(one_json['top1']) == {'cls', 'patch_mean'}
    # the progress bar (mmengine's, with ETA) goes to stderr, the results to stdout, once
    assert 'ETA' in one.stderr and 'ETA' in two.stderr
    assert two.stdout.count('k-NN cls') == 1
    assert one_json['extract_s_per_1000_images'] > 0
