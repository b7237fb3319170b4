"""Two CPU processes (gloo, DDP) with batch B give the gradients of one process with batch 2B.

MoCo v3 gathers its keys across ranks and RePre's reconstruction loss is a per-rank mean, which
DDP's gradient averaging turns into the global mean. The necks use LayerNorm here: BatchNorm's
batch statistics are per rank by design (SyncBN is what makes them global on GPUs).
"""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from helpers import tiny_mocov3, tiny_repre

B = 4


def _model():
    import repre_mm  # noqa: F401  (registers RePre in a spawned process)
    from mmengine.logging import MessageHub
    from mmpretrain.registry import MODELS
    MessageHub.get_current_instance().update_info('max_iters', 100)
    framework = tiny_mocov3()
    for mlp in (framework['neck'], framework['head']['predictor']):
        mlp.update(norm_cfg=dict(type='LN'), with_last_bn=False)
    torch.manual_seed(0)
    model = MODELS.build(tiny_repre(framework=framework, levels=(1, 3)))
    model.init_weights()
    return model


def _views():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2 * B, 3, 32, 32, generator=g) for _ in range(2)]


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    model = _model()
    ddp = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    views = [v[rank * B:(rank + 1) * B] for v in _views()]
    losses = ddp(views, None, mode='loss')
    (losses['loss'] + losses['loss_rec']).backward()
    if rank == 0:
        torch.save(_grads(model), out)
    dist.barrier()
    dist.destroy_process_group()


def test_two_processes_of_batch_b_equal_one_of_batch_2b(tmp_path):
    out = str(tmp_path / 'ddp_grads.pth')
    mp.spawn(_worker, args=(2, 29000 + os.getpid() % 1000, out), nprocs=2, join=True)
    ddp_grads = torch.load(out, weights_only=True)

    model = _model()
    losses = model.loss(_views(), None)
    (losses['loss'] + losses['loss_rec']).backward()
    single = _grads(model)

    assert set(ddp_grads) == set(single)
    assert any(n.startswith('decoder.') for n in single) and any(
        n.startswith('backbone.') for n in single)
    for name, grad in single.items():
        assert torch.allclose(ddp_grads[name], grad, rtol=1e-4, atol=1e-6), name
    # and the check can fail: half the batch alone gives other gradients
    model.zero_grad()
    half = model.loss([v[:B] for v in _views()], None)
    (half['loss'] + half['loss_rec']).backward()
    assert not all(torch.allclose(p.grad, single[n], rtol=1e-4, atol=1e-6)
                   for n, p in model.named_parameters() if p.grad is not None)
