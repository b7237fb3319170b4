"""The prepared GPU check: what only a GPU machine can show, measured in one go, one JSON out.

    python tools/benchmarks/gpu_check.py --out work_dirs/gpu_check/gpu_check.json   # one GPU
    python tools/benchmarks/gpu_check.py --device cpu --quick                       # the test

(``tools/benchmarks/gpu_check.sh WHEELS_DIR`` installs the stack from a wheel folder first.)

1. ``overhead``: ``overhead.py --amp`` in fp16 and bf16, ViT-S/16 and ViT-B/16 at 224, the
   largest batch of 128 and 64 that fits: time and memory ratio, images/s, peak memory; and
   ``--compile`` in bf16 (ViT-S/16): eager and compiled MoCo v3 and RePre, compiled RePre /
   eager MoCo v3, compile time apart.
2. ``train``: 100 iterations of ``tools/train.py`` on the RePre MoCo v3 ViT-S/16 config with
   ``--amp`` (fp16, dynamic loss scale) on a generated image folder: losses finite, the loss
   scale settled (no decrease in the second half), ``loss_rec`` falling.
3. ``train_launcher_pytorch``: the same through ``torch.distributed.run`` with 1 process and
   ``--launcher pytorch``: the NCCL process group starts and the config's SyncBN layers build.
4. ``knn``: ``knn.py`` on the device over a generated labelled folder with the checkpoint of 2:
   seconds per 1,000 images.

``--quick`` (with ``--device cpu``, the test of this script) swaps in the tiny Fashion-MNIST
configs, 32-pixel images and a few iterations; on CPU ``--amp`` means bf16, so there is no loss
scale, and the process group is gloo without SyncBN (see repre_mm/compat/mmengine.py). Each
step runs in its own process with a time limit; a failed step is recorded and the others still
run. ``--budget`` (default 540 s, one 10-minute call of a lent GPU with room to spare) is shared
out between the steps (``BUDGET_SHARES``): each step's processes get its share at most, a step
whose share no longer fits is recorded as skipped. The JSON is written after every step, so a
run killed at its limit keeps what finished. The exit status is 0 only when every required
check passed.
"""
import argparse
import json
import math
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
VIT_S = ('configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py',
         'configs/baselines/mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py')
VIT_B = ('configs/repre/repre_mocov3_vit-base-p16_16xb256-amp-coslr-300e_in1k.py',
         'configs/baselines/mocov3_vit-base-p16_16xb256-amp-coslr-300e_in1k.py')
TINY = 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'
STEPS = ('overhead', 'train', 'train_launcher_pytorch', 'knn')
# each step's share of --budget; a step needs MIN_STEP_S of it to start
BUDGET_SHARES = dict(overhead=0.35, train=0.25, train_launcher_pytorch=0.2, knn=0.2)
MIN_STEP_S = 20


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--quick', action='store_true',
                        help='tiny configs and data, a few iterations (the CPU test)')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'gpu_check'))
    parser.add_argument('--out', help='the JSON file (default: WORK_DIR/gpu_check.json)')
    parser.add_argument('--iters', type=int, default=100, help='training iterations')
    parser.add_argument('--workers', type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument('--only', nargs='+', choices=STEPS, help='run only these steps')
    parser.add_argument('--budget', type=float, default=540,
                        help='seconds for all the steps together (default 540: one 10-minute '
                        'call with room for the set-up)')
    args = parser.parse_args()
    args.out = args.out or osp.join(args.work_dir, 'gpu_check.json')
    if args.quick:
        args.iters, args.workers = 8, 0
    return args


# --- data -------------------------------------------------------------------------------------
def write_images(folder, num, size, classes=('class_a', 'class_b'), seed=0):
    """Smooth random images (upsampled 4x4 noise plus a class tint) that a decoder can learn
    to reconstruct, in class folders. White noise could not be reconstructed at all, so
    ``loss_rec`` would have nothing to fall to."""
    import cv2
    import numpy as np
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        os.makedirs(osp.join(folder, name), exist_ok=True)
        tint = np.array([60, 0, 0] if c == 0 else [0, 0, 60])
        for i in range(num // len(classes)):
            low = rng.uniform(0, 195, (4, 4, 3))
            img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + tint
            cv2.imwrite(osp.join(folder, name, f'{i}.jpg'), np.clip(img, 0, 255).astype('uint8'))
    return folder


# --- running steps ------------------------------------------------------------------------------
def run(cmd, timeout, log_file, env=None):
    """Runs a step's command; returns (ok, seconds, stdout + stderr tail)."""
    start = time.time()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               PYTHONUNBUFFERED='1', **(env or {}))
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout)
        ok, text = out.returncode == 0, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        ok, text = False, f'timed out after {timeout:.0f} s\n' + str(e.stdout or '')[-4000:]
    with open(log_file, 'w') as f:
        f.write(' '.join(cmd) + '\n' + text)
    return ok, round(time.time() - start, 1), text


def last_json(text):
    lines = [line for line in text.splitlines() if line.startswith('{')]
    return json.loads(lines[-1]) if lines else None


def step_overhead(args):
    """fp16 and bf16, ViT-S/16 and ViT-B/16: the largest batch of (128, 64) that fits."""
    results = []
    if args.quick:
        cases = [('bfloat16', 'tiny', None, [4])]
    else:
        cases = [(dtype, name, configs, [128, 64]) for dtype in ('float16', 'bfloat16')
                 for name, configs in (('vit-s16', VIT_S), ('vit-b16', VIT_B))]
        # eager and compiled (every encoder block and the decoder), MoCo v3 and RePre, bf16
        cases.append(('bfloat16', 'vit-s16-compiled', VIT_S, [128, 64]))
    for dtype, name, configs, batches in cases:
        for batch in batches:
            cmd = [sys.executable, 'tools/benchmarks/overhead.py', '--device', args.device,
                   '--amp', '--amp-dtype', dtype, '--batch', str(batch)]
            if name.endswith('-compiled'):
                cmd.append('--compile')
            cmd += ['--quick', '--no-memory'] if args.quick else [
                '--configs', *configs, '--iters', '10', '--warmup', '3']
            ok, seconds, text = run(cmd, args.step_limit(300), osp.join(
                args.work_dir, f'overhead_{name}_{dtype}_b{batch}.log'))
            oom = 'OutOfMemoryError' in text or 'out of memory' in text
            if ok or not oom:
                break  # fits, or failed for another reason than memory: no smaller batch
        result = last_json(text) if ok else None
        results.append(dict(model=name, dtype=dtype, batch=batch, ok=ok, seconds=seconds,
                            result=result, error=None if ok else text[-1500:]))
    return dict(ok=all(r['ok'] for r in results), runs=results)


def train_config(args, data_root):
    """A config over the generated images: the recipe's model, pipeline and schedule;
    ``args.iters`` iterations exactly (epochs of 10 iterations, 4 with --quick)."""
    base = osp.join(ROOT, TINY if args.quick else VIT_S[0])
    batch, per_epoch = (4, 4) if args.quick else (64, 10)
    if args.iters % per_epoch:
        raise ValueError(f'--iters must be a multiple of {per_epoch}')
    epochs = args.iters // per_epoch
    path = osp.join(args.work_dir, 'train_config.py')
    with open(path, 'w') as f:
        f.write(f"""_base_ = {base!r}
train_dataloader = dict(
    batch_size={batch}, num_workers={args.workers}, persistent_workers={args.workers > 0},
    drop_last=True,
    dataset=dict(_delete_=True, type='CustomDataset', data_root={data_root!r}, data_prefix='',
                 with_label=False, indices={batch * per_epoch},
                 pipeline={{{{_base_.train_dataloader.dataset.pipeline}}}}))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={epochs})
custom_hooks = [dict(type='TrainHealthHook'), dict(type='NonFiniteLossHook')]
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval={epochs}, max_keep_ckpts=1))
randomness = dict(seed=0)
""")
    return path, epochs, batch


def read_health(work_dir, args, distributed):
    """The checks of a training run, from TrainHealthHook's file."""
    with open(osp.join(work_dir, 'health.json')) as f:
        health = json.load(f)
    iters, setup = health['iters'], health['setup']
    losses = [r['loss'] for r in iters] + [r['loss_rec'] for r in iters]
    finite = all(isinstance(v, float) and math.isfinite(v) for v in losses)
    n = max(1, len(iters) // 10)
    rec = [r['loss_rec'] for r in iters]
    first, last = statistics.mean(rec[:n]), statistics.mean(rec[-n:])
    scales = [r['loss_scale'] for r in iters if 'loss_scale' in r]
    decreases = [r['iter'] for a, r in zip(iters, iters[1:])
                 if 'loss_scale' in r and r['loss_scale'] < a['loss_scale']]
    steps = [b['time'] - a['time'] for a, b in zip(iters, iters[1:])]
    checks = dict(iterations=len(iters) == args.iters, losses_finite=finite)
    info = {}
    if args.quick:
        info['loss_rec_falls'] = last < first  # a few iterations: recorded, not required
    else:
        checks['loss_rec_falls'] = last < first
    if args.device == 'cuda':
        # dynamic fp16 scaling may halve the scale on early overflows, then it must settle
        checks['loss_scale_settled'] = bool(scales) and not [
            i for i in decreases if i > len(iters) // 2] and scales[-1] >= 1
        if distributed:
            checks['nccl'] = setup['backend'] == 'nccl'
            checks['syncbn_built'] = setup['syncbn_layers'] > 0
    elif distributed:
        checks['gloo'] = setup['backend'] == 'gloo'
    return dict(
        ok=all(checks.values()), checks=checks, info=info, setup=setup, iterations=len(iters),
        loss_rec_first=round(first, 4), loss_rec_last=round(last, 4),
        loss_first=iters[0]['loss'], loss_last=iters[-1]['loss'],
        loss_scale=dict(first=scales[0], last=scales[-1], min=min(scales),
                        decreases_at_iters=decreases) if scales else None,
        median_iter_s=round(statistics.median(steps), 4) if steps else None)


def step_train(args, data_root, distributed):
    config, epochs, batch = train_config(args, data_root)
    name = 'train_launcher_pytorch' if distributed else 'train'
    work_dir = osp.join(args.work_dir, name)
    prefix = [sys.executable]
    if distributed:
        prefix += ['-m', 'torch.distributed.run', '--nproc_per_node=1',
                   f'--master_port={29400 + os.getpid() % 500}']
    cmd = prefix + ['tools/train.py', config, '--work-dir', work_dir, '--amp']
    if distributed:
        cmd += ['--launcher', 'pytorch']
    ok, seconds, text = run(cmd, args.step_limit(420), osp.join(args.work_dir, f'{name}.log'))
    result = dict(ok=ok, seconds=seconds, epochs=epochs, batch=batch, amp='--amp')
    if not ok:
        return dict(result, error=text[-3000:])
    try:
        result.update(read_health(work_dir, args, distributed))
    except (OSError, KeyError, ValueError, IndexError) as e:
        return dict(result, ok=False, error=f'no usable health.json: {e!r}\n' + text[-2000:])
    result['seconds'] = seconds
    result['checkpoint'] = osp.join(work_dir, f'epoch_{epochs}.pth')
    return result


def step_knn(args, bank, query, checkpoint):
    config = osp.join(ROOT, TINY if args.quick else VIT_S[0])
    out = osp.join(args.work_dir, 'knn.json')
    cmd = [sys.executable, 'tools/benchmarks/knn.py', config, checkpoint, '--bank', bank,
           '--bank-split', '', '--query', query, '--query-split', '', '--device', args.device,
           '--amp', '--no-progress', '--out', out, '--workers', str(args.workers),
           '--img-size', '28' if args.quick else '224', '--batch-size',
           '8' if args.quick else '256']
    ok, seconds, text = run(cmd, args.step_limit(300), osp.join(args.work_dir, 'knn.log'))
    if not ok:
        return dict(ok=False, seconds=seconds, error=text[-3000:])
    with open(out) as f:
        result = json.load(f)
    return dict(result, ok=True, wall_seconds=seconds)


def environment(args):
    import torch
    facts = dict(python=platform.python_version(), torch=torch.__version__,
                 torch_cuda=torch.version.cuda, device=args.device, quick=args.quick,
                 cpu_count=os.cpu_count())
    if args.device == 'cuda':
        facts.update(gpu=torch.cuda.get_device_name(), gpus=torch.cuda.device_count(),
                     bf16_supported=torch.cuda.is_bf16_supported())
    for module in ('mmengine', 'mmcv', 'mmpretrain'):
        try:
            facts[module] = __import__(module).__version__
        except Exception as e:  # recorded, not fatal: the steps say what breaks
            facts[module] = f'missing: {e!r}'
    try:
        from mmcv.ops import get_compiling_cuda_version
        facts['mmcv_ops'] = get_compiling_cuda_version()
    except Exception:
        facts['mmcv_ops'] = None  # mmcv-lite: pre-training needs no mmcv op
    return facts


def write_report(report, path):
    """The report as it stands, replacing the last one whole (a kill never leaves half)."""
    tmp = f'{path}.partial'
    with open(tmp, 'w') as f:
        json.dump(report, f, indent=1)
    os.replace(tmp, path)


class Budget:
    """--budget shared out between the steps: ``limit(default)`` is the time limit of one
    process of the current step, the smaller of its default, what is left of the step's share
    and what is left of the whole budget."""

    def __init__(self, seconds):
        self.seconds, self.start = seconds, time.time()
        self.step_end = self.start

    def left(self):
        return self.seconds - (time.time() - self.start)

    def begin(self, step):
        self.step_end = time.time() + min(BUDGET_SHARES[step] * self.seconds, self.left())
        return self.step_end - time.time() >= MIN_STEP_S

    def limit(self, default):
        return max(1.0, min(default, self.step_end - time.time()))


def main():
    args = parse_args()
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():  # before anything asks the GPU for its name
            sys.exit('gpu_check: --device cuda, but torch sees no GPU (torch '
                     f'{torch.__version__}, built for CUDA {torch.version.cuda}; '
                     f'CUDA_VISIBLE_DEVICES={os.environ.get("CUDA_VISIBLE_DEVICES")!r}). '
                     'Run it on a GPU machine, or check everything else with --device cpu --quick.')
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    budget = Budget(args.budget)
    args.step_limit = budget.limit
    report = dict(environment=environment(args), budget_s=args.budget, steps={}, ok=False,
                  finished=False)
    steps = args.only or list(STEPS)

    def record(name, fn, *fn_args):
        t0 = time.time()
        if not budget.begin(name):
            report['steps'][name] = dict(ok=False, skipped=f'budget: {budget.left():.0f} s of '
                                         f'--budget {args.budget:.0f} left')
        else:
            try:
                report['steps'][name] = fn(*fn_args)
            except Exception as e:  # one broken step must not hide the others' results
                report['steps'][name] = dict(ok=False, error=repr(e))
        report['seconds'] = round(time.time() - budget.start, 1)
        write_report(report, args.out)
        print(f'[gpu_check] {name}: {"ok" if report["steps"][name]["ok"] else "FAILED"} '
              f'({time.time() - t0:.0f} s)', flush=True)

    write_report(report, args.out)
    data = osp.join(args.work_dir, 'data')
    size, n_train, n_query = (32, 16, 8) if args.quick else (256, 2000, 500)
    if not osp.isdir(osp.join(data, 'train')):
        write_images(osp.join(data, 'train'), n_train, size, seed=0)
        write_images(osp.join(data, 'query'), n_query, size, seed=1)
    if 'overhead' in steps:
        record('overhead', step_overhead, args)
    if 'train' in steps:
        record('train', step_train, args, osp.join(data, 'train'), False)
    if 'train_launcher_pytorch' in steps:
        record('train_launcher_pytorch', step_train, args, osp.join(data, 'train'), True)
    if 'knn' in steps:
        checkpoint = report['steps'].get('train', {}).get('checkpoint')
        if checkpoint and osp.exists(checkpoint):
            record('knn', step_knn, args, osp.join(data, 'train'), osp.join(data, 'query'),
                   checkpoint)
        else:
            report['steps']['knn'] = dict(ok=False, error='no checkpoint from the train step')
    report['ok'] = all(s['ok'] for s in report['steps'].values())
    report['seconds'] = round(time.time() - budget.start, 1)
    report['finished'] = True
    write_report(report, args.out)
    print(f'[gpu_check] {"all checks passed" if report["ok"] else "SOME CHECKS FAILED"} in '
          f'{report["seconds"]:.0f} s; report: {args.out}')
    sys.exit(0 if report['ok'] else 1)


if __name__ == '__main__':
    main()
