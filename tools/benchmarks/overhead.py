"""What RePre costs on top of its framework: step time, peak memory and FLOPs, side by side.

    python tools/benchmarks/overhead.py                    # ViT-S/16 MoCo v3 pair, CPU, batch 8
    python tools/benchmarks/overhead.py --device cuda --amp --batch 128
    python tools/benchmarks/overhead.py --quick            # tiny ViT, 2 iterations (tests)
    python tools/benchmarks/overhead.py --pair dino        # DINO ViT-S/16: 2 x 224 + 10 x 96 crops
    python tools/benchmarks/overhead.py --compile          # + both compiled (compile_encoder)

Three models are built from the configs: RePre (A), the base framework (B, mmpretrain's own
class) and RePre with the reconstruction off (``rec_head.loss_weight=0``: our wrapper alone).
After a warm-up, training steps (forward, backward, AdamW step) on one synthetic batch run
interleaved A B C A B C ..., so that drift of a shared machine hits all three; medians are
compared. With ``--pair dino`` each step sees DINO's multi-crop views (2 global crops at
``--img-size``, ``--local-crops`` local ones at 96/224 of it) and RePre reconstructs the global
crops only, as in its DINO configs; ``decoder_flops_share`` (decoder FLOPs over the student
encoder's, per step) is then the bound the time ratio should stay near. Peak memory of a step:
on GPU ``torch.cuda.max_memory_allocated``; on CPU the growth of the process's peak RSS over
its size after building, measured in a fresh process per model.

``--compile`` times four models instead, interleaved: eager RePre and base, and both with every
encoder block (online and momentum / teacher) and RePre's decoder compiled
(``torch.compile`` of each forward: RePre's ``compile_encoder``,
``repre_mm.models.repre.compile_blocks`` for the base). Compilation happens in the first
warm-up step of a compiled model and is reported apart (``compile_s``: that step's time less
the median step), never inside the step times; compiled RePre steps first, and the base's
blocks are the same code, so RePre's first step pays for the blocks of both. The ratios compiled
RePre / eager base and compiled RePre / compiled base come from the same run.
Prints one JSON line.
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)

import repre_mm  # noqa: E402,F401,I001
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.model import revert_sync_batchnorm  # noqa: E402

from mmpretrain.registry import MODELS  # noqa: E402
from repre_mm.models.repre import compile_blocks  # noqa: E402
from repre_mm.utils.flops import count_flops  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402

DEFAULT_CONFIGS = [
    'configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py',
    'configs/baselines/mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py',
]
QUICK_CONFIGS = [
    'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
    'configs/baselines/mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
]
DINO_CONFIGS = [
    'configs/repre/repre_dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py',
    'configs/baselines/dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py',
]
DINO_QUICK_CONFIGS = [
    'configs/repre/repre_dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
    'configs/baselines/dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py',
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--configs', nargs=2, metavar=('REPRE', 'BASE'))
    parser.add_argument('--pair', choices=['mocov3', 'dino'], default='mocov3',
                        help='default configs and views: MoCo v3 (2 views) or DINO (multi-crop)')
    parser.add_argument('--local-crops', type=int, default=None,
                        help='local crops per image (default: 10 for dino, 0 for mocov3)')
    parser.add_argument('--local-size', type=int, default=None,
                        help='local crop size (default: img-size * 96 / 224)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true',
                        help='autocast: fp16 (GradScaler) on GPU, bf16 on CPU')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default=None)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (CPU)')
    parser.add_argument('--quick', action='store_true', help='tiny ViT, 2 iterations')
    parser.add_argument('--compile', action='store_true',
                        help='also time both models with their blocks and decoder compiled')
    parser.add_argument('--extra-models', nargs='+', default=[], metavar='NAME',
                        help='more models timed in the same run: repre or base, then any of '
                        '_compiled, _fused (fused AdamW), _cp (activation checkpointing of the '
                        'online blocks, RePre only), _cl (the decoder in channels-last, RePre '
                        'only), e.g. repre_compiled_fused base_fused')
    parser.add_argument('--no-memory', action='store_true',
                        help='CPU: skip the peak-memory probes (two more processes)')
    parser.add_argument('--memory-probe', help=argparse.SUPPRESS)
    args = parser.parse_args()
    for name in args.extra_models + ([args.memory_probe] if args.memory_probe else []):
        model_options(parser, name)
    dino = args.pair == 'dino'
    if args.quick:
        args.configs = args.configs or (DINO_QUICK_CONFIGS if dino else QUICK_CONFIGS)
        args.iters, args.warmup, args.img_size, args.batch = 2, 1, 28, 4
    args.configs = args.configs or (DINO_CONFIGS if dino else DEFAULT_CONFIGS)
    if args.local_crops is None:
        args.local_crops = 10 if dino else 0
    if args.local_size is None:
        args.local_size = args.img_size * 96 // 224
    if args.amp and args.amp_dtype is None:
        args.amp_dtype = 'float16' if args.device.startswith('cuda') else 'bfloat16'
    return args


def model_options(parser, name):
    """'repre', 'base' or 'off' (RePre with the reconstruction branch off), then options:
    'compiled' (blocks and decoder compiled in place, at the first step), 'fused' (fused
    AdamW), 'cp' (RePre's with_cp), 'cl' (RePre's decoder in channels-last memory format).
    Returns (kind, options)."""
    kind, *options = name.split('_')
    if kind not in ('repre', 'base', 'off') or \
            not set(options) <= {'compiled', 'fused', 'cp', 'cl'} or \
            (kind == 'base' and {'cp', 'cl'} & set(options)):
        message = (f'model {name!r}: repre, base or off, then any of _compiled, _fused, _cp, '
                   f'_cl (the last two RePre only), e.g. repre_compiled_fused')
        if parser:
            parser.error(message)
        raise ValueError(message)
    return kind, set(options)


def build(args, which):
    """A model named as :func:`model_options` reads it, in train mode on the device."""
    kind, options = model_options(None, which)
    compiled = 'compiled' in options
    cfg = Config.fromfile(osp.join(ROOT, args.configs[0 if kind != 'base' else 1]))
    model_cfg = cfg.model
    if kind == 'off':
        model_cfg.rec_head.loss_weight = 0.0
    if kind != 'base' and compiled:  # RePre, and RePre with the branch off
        model_cfg.compile_encoder = True
    if 'cp' in options:
        model_cfg.with_cp = True
    backbone = model_cfg.framework.backbone if kind != 'base' else model_cfg.backbone
    backbone.img_size = args.img_size
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))  # one process: plain BN
    model.init_weights()
    model = model.to(args.device).train()
    if 'cl' in options:  # the convolutions then run in NHWC, oneDNN's (and cuDNN's) own layout
        model.decoder.to(memory_format=torch.channels_last)
    if kind == 'base' and compiled:  # as RePre's compile_encoder does for its framework
        compile_blocks(model, type(model.backbone.layers[0]))
    return model


def view_sizes(args):
    """2 global views at img_size, then the local crops (DINO), as the data pipelines give them."""
    return [args.img_size] * 2 + [args.local_size] * args.local_crops


def make_step(args, model, fused=False):
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(args.batch, 3, size, size, generator=g).to(device)
             for size in view_sizes(args)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  fused=fused or None)
    dtype = getattr(torch, args.amp_dtype) if args.amp else None
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and dtype == torch.float16)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=args.amp):
            losses = model.loss(views, None)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def _sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _reset_peak_rss() -> bool:
    """Linux: make VmHWM (the peak RSS) start again from the current RSS."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def _peak_rss_bytes():
    with open('/proc/self/status') as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))


def memory_probe(args):
    """Run in a fresh process: peak RSS growth of warm-up + timed steps over the built model.
    With --compile (compiled models compile in their first step, and the compiler's own memory
    is no step's), every model is measured the same other way: the peak RSS growth of one step
    after the warm-up, over the RSS before it (optimizer state already allocated)."""
    model = build(args, args.memory_probe)
    step = make_step(args, model, fused='fused' in model_options(None, args.memory_probe)[1])
    if args.compile:
        for _ in range(args.warmup):
            step()
        if not _reset_peak_rss():
            raise SystemExit('--compile memory needs /proc/self/clear_refs (Linux)')
        before = _rss_bytes()
        step()
        print(json.dumps(dict(peak_delta=_peak_rss_bytes() - before)))
        return
    before = _rss_bytes()
    for _ in range(args.warmup + 1):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(peak_delta=peak - before)))


def cpu_peak_memory(args, which):
    cmd = [sys.executable, __file__, '--memory-probe', which, '--configs', *args.configs,
           '--device', args.device, '--batch', str(args.batch), '--img-size', str(args.img_size),
           '--warmup', str(args.warmup), '--local-crops', str(args.local_crops),
           '--local-size', str(args.local_size)] + (
               ['--amp', '--amp-dtype', args.amp_dtype] if args.amp else []) + (
                   ['--compile'] if args.compile else [])
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_delta']


def compiled_ratios(medians, first_step):
    """The ratios --compile is for, and compilation time kept out of the step times."""
    return dict(
        compiled_repre_over_eager_base=round(medians['repre_compiled'] / medians['base'], 4),
        compiled_repre_over_compiled_base=round(
            medians['repre_compiled'] / medians['base_compiled'], 4),
        compiled_base_over_eager_base=round(medians['base_compiled'] / medians['base'], 4),
        compile_s={name: round(first_step[name] - medians[name], 1)
                   for name in ('repre_compiled', 'base_compiled')})


def timed_steps(args, names, models) -> tuple:
    """Every model's training step, interleaved: (median seconds after the warm-up, seconds of
    the first step, GPU peak bytes)."""
    steps = {name: make_step(args, models[name], fused='fused' in model_options(None, name)[1])
             for name in names}
    times = {name: [] for name in names}
    first_step, gpu_peak = {}, {}
    for i in range(args.warmup + args.iters):
        for name in names:
            if args.device.startswith('cuda'):
                torch.cuda.reset_peak_memory_stats()
            _sync(args.device)
            start = time.perf_counter()
            steps[name]()
            _sync(args.device)
            if i == 0:
                first_step[name] = time.perf_counter() - start
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
            if args.device.startswith('cuda'):
                gpu_peak[name] = max(gpu_peak.get(name, 0), torch.cuda.max_memory_allocated())
    return {name: statistics.median(t) for name, t in times.items()}, first_step, gpu_peak


def flops_per_view(args, repre) -> tuple:
    """(encoder, decoder) forward FLOPs of one image at --img-size, and the decoder's share of
    the encoder's FLOPs over every view."""
    repre = repre.cpu().eval()
    flops = {}  # per view size: (encoder, decoder)
    for size in sorted(set(view_sizes(args)), reverse=True):
        image = torch.randn(1, 3, size, size)
        with torch.no_grad(), repre.tap.record() as calls:
            repre.backbone(image)
        flops[size] = (count_flops(repre.backbone, image),
                       count_flops(repre.decoder, calls[0].levels))
    # RePre decodes the global views only unless reconstruct_local_crops is set
    decoded = [s for s in view_sizes(args)
               if s == args.img_size or repre.reconstruct_local_crops]
    share = (sum(flops[s][1] for s in decoded) / sum(flops[s][0] for s in view_sizes(args)))
    return flops[args.img_size] + (share, )


def main():
    args = parse_args()
    quiet_mmengine()
    if args.threads:
        torch.set_num_threads(args.threads)
    MessageHub.get_current_instance().update_info('max_iters', 1000)  # for MoCo's CosineEMA
    if args.memory_probe:
        return memory_probe(args)

    names = (('repre', 'base', 'repre_compiled', 'base_compiled') if args.compile
             else ('repre', 'base', 'off')) + tuple(args.extra_models)
    models = {name: build(args, name) for name in names}
    medians, first_step, gpu_peak = timed_steps(args, names, models)
    if args.device.startswith('cuda'):
        peak = gpu_peak
    elif args.no_memory:
        peak = {}
    else:
        peak = {name: cpu_peak_memory(args, name) for name in names if name != 'off'}
    encoder_flops, decoder_flops, decoder_share = flops_per_view(args, models['repre'])

    print(json.dumps(dict(
        time_ratio=round(medians['repre'] / medians['base'], 4),
        memory_ratio=round(peak['repre'] / peak['base'], 4) if peak else None,
        decoder_flops_ratio=round(decoder_flops / encoder_flops, 4),
        decoder_flops_share=round(decoder_share, 4),
        wrapper_off_time_ratio=(round(medians['off'] / medians['base'], 4)
                                if 'off' in medians else None),
        **(compiled_ratios(medians, first_step) if args.compile else {}),
        over_eager_base={name: round(medians[name] / medians['base'], 4) for name in names},
        median_step_s=dict((k, round(v, 4)) for k, v in medians.items()),
        images_per_s=dict((k, round(args.batch / v, 1)) for k, v in medians.items()),
        peak_memory_mb=dict((k, round(v / 2**20, 1)) for k, v in peak.items()),
        encoder_gflops_per_view=round(encoder_flops / 1e9, 3),
        decoder_gflops_per_view=round(decoder_flops / 1e9, 3),
        device=torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu',
        threads=torch.get_num_threads(),
        dtype=args.amp_dtype if args.amp else 'float32', batch=args.batch,
        img_size=args.img_size, views=view_sizes(args), iters=args.iters, warmup=args.warmup,
        configs=[osp.basename(c) for c in args.configs], torch=torch.__version__)))


if __name__ == '__main__':
    main()
