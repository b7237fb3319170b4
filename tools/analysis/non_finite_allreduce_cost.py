"""What NonFiniteLossHook's per-step all-reduce costs, next to a training step, with 2 gloo
ranks on CPU.

    python tools/analysis/non_finite_allreduce_cost.py [--config CFG] [--batch 8] [--steps 10]

Times, on each of 2 processes (one thread each): the hook's flag all-reduce (``_on_any_rank``:
a 0-d tensor through mmengine's ``all_reduce``, then ``.item()``), the check of the reduced
gradients that replaces it under DDP (``_all_finite``), and one DDP training step of the
config's model (default: the smallest recipe here, ViT-tiny/4 on 28x28 Fashion-MNIST images).
Rank 0 prints one JSON line; the microseconds are medians.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

ROOT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..')
DEFAULT = 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'


def _median_us(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def _worker(rank, port, args, queue):
    from datetime import timedelta
    from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper

    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    from repre_mm.engine.non_finite_hook import NonFiniteLossHook, _all_finite
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2,
                                         timeout=timedelta(seconds=120))
    cfg = Config.fromfile(osp.join(ROOT, args.config))
    torch.manual_seed(0)
    module = revert_sync_batchnorm(MODELS.build(cfg.model))
    model = MMDistributedDataParallel(
        module=module, find_unused_parameters=cfg.get('find_unused_parameters', False))
    optim_wrapper = build_optim_wrapper(module, cfg.optim_wrapper)
    size = cfg.model.framework.backbone.get('img_size', 224)
    data = dict(inputs=[torch.randint(0, 256, (args.batch, 3, size, size), dtype=torch.uint8)
                        for _ in range(2)],
                data_samples=[DataSample() for _ in range(args.batch)])

    from mmengine.logging import MessageHub
    hub = MessageHub.get_current_instance()  # MoCo v3's momentum schedule reads these
    hub.update_info('iter', 0)
    hub.update_info('max_iters', 1000)

    def step():
        model.train_step(data, optim_wrapper)

    for _ in range(2):  # warm-up
        step()
        NonFiniteLossHook._on_any_rank(False)
    # a step leaves no gradients (zero_grad): the check's input, one tensor a parameter
    grads = [torch.randn_like(p) for p in module.parameters() if p.requires_grad]
    result = dict(
        config=osp.basename(args.config), batch_per_rank=args.batch, img_size=size,
        world_size=2, backend='gloo', threads_per_rank=1,
        all_reduce_us=_median_us(lambda: NonFiniteLossHook._on_any_rank(False), args.reduces),
        grad_check_us=_median_us(lambda: _all_finite(grads), args.reduces),
        trainable_tensors=len(grads),
        step_us=_median_us(step, args.steps))
    result['all_reduce_share_of_step'] = result['all_reduce_us'] / result['step_us']
    if rank == 0:
        queue.put(result)
    torch.distributed.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default=DEFAULT)
    parser.add_argument('--batch', type=int, default=8, help='images per rank')
    parser.add_argument('--steps', type=int, default=10)
    parser.add_argument('--reduces', type=int, default=500)
    parser.add_argument('--port', type=int, default=29611)
    args = parser.parse_args()
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    ranks = [ctx.Process(target=_worker, args=(r, args.port, args, queue)) for r in range(2)]
    for p in ranks:
        p.start()
    import queue as queues
    while True:
        try:
            result = queue.get(timeout=5)
            break
        except queues.Empty:
            if any(p.exitcode not in (None, 0) for p in ranks):
                for p in ranks:
                    p.kill()
                sys.exit('a rank failed')
    for p in ranks:
        p.join(60)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
