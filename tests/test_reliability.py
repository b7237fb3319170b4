"""Failure handling: non-finite losses, strict checkpoint loading."""
import math
import os
import os.path as osp
import time
import warnings

import repre_mm  # noqa: F401,I001  (first: compat patches, also in spawned processes)

from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from mmengine.runner import Runner

from mmpretrain.registry import HOOKS, MODELS
from repre_mm.utils.checkpoint import load_strict, load_weights
from helpers import shrink_pretrain_cfg, tiny_mocov3, tiny_repre, tiny_vit, write_images

ROOT = osp.dirname(osp.dirname(__file__))
TINY = osp.join(ROOT, 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')
TINY_DINO = osp.join(ROOT, 'configs/repre/repre_dino_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')


@HOOKS.register_module()
class _InjectNaN(Hook):
    """Test only: makes the reconstruction loss NaN at the given iterations (on one rank only
    when ``rank`` is given)."""
    priority = 'HIGHEST'

    def __init__(self, iters, rank=None):
        self.iters, self.rank = iters, rank

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        here = self.rank is None or self.rank == runner.rank
        model.rec_head.loss_weight = math.nan if here and runner.iter in self.iters else 1.0


@HOOKS.register_module()
class _RecordState(Hook):
    """Test only: every parameter and buffer (momentum encoder, teacher, BN statistics...)
    before each iteration."""
    priority = 'LOWEST'

    def __init__(self):
        self.before = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        self.before[runner.iter] = {k: v.clone() for k, v in model.state_dict().items()}


@OPTIM_WRAPPERS.register_module()
class _CPUAmpOptimWrapper(AmpOptimWrapper):
    """Test only: mmengine's AmpOptimWrapper (its backward, step, state_dict) with a real CPU
    GradScaler. The wrapper asserts a GPU, and builds a CUDA GradScaler that disables itself
    on a CPU machine; fp16 autocast is left out (the scaler does not need it)."""

    def __init__(self, **kwargs):
        import mmengine.optim.optimizer.amp_optimizer_wrapper as amp
        with mock.patch.object(amp, 'is_cuda_available', lambda: True), \
                warnings.catch_warnings():
            warnings.simplefilter('ignore')
            super().__init__(**kwargs)
        self.loss_scaler = torch.amp.GradScaler('cpu')

    optim_context = OptimWrapper.optim_context


@HOOKS.register_module()
class _RecordLossScale(Hook):
    """Test only: the GradScaler's state before each iteration and after the last."""

    def __init__(self):
        self.before = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.before[runner.iter] = runner.optim_wrapper.loss_scaler.state_dict()

    def after_train(self, runner):
        self.before[runner.iter] = runner.optim_wrapper.loss_scaler.state_dict()


def _runner(tmp_path, action, nan_iters, epochs=1, config=TINY, optim_wrapper=None, resume=False,
            load_from=None, extra_hooks=(), **hook_kwargs):
    images = write_images(str(tmp_path / 'img'), num=8, size=28)
    cfg = shrink_pretrain_cfg(Config.fromfile(config), images, str(tmp_path / 'work'), img=28)
    cfg.train_cfg.max_epochs = epochs  # 8 images, batch 2: 4 iterations an epoch
    cfg.custom_hooks = [dict(type='NonFiniteLossHook', action=action, **hook_kwargs),
                        dict(type='_InjectNaN', iters=nan_iters), dict(type='_RecordState'),
                        *extra_hooks]
    if optim_wrapper:
        cfg.optim_wrapper.update(optim_wrapper)
    cfg.resume, cfg.load_from = resume, load_from
    # a message hub of its own (a runner built in the same second would share one)
    cfg.experiment_name = f'{tmp_path.name}-{time.monotonic_ns()}'
    return Runner.from_cfg(cfg)


def _hook(runner, name):
    [hook] = [h for h in runner.hooks if type(h).__name__ == name]
    return hook


def _changed(before, after):
    return sorted(k for k in before if not torch.equal(before[k], after[k]))


def test_non_finite_loss_stops_before_the_update_naming_term_and_iteration(tmp_path):
    runner = _runner(tmp_path, 'stop', nan_iters=[2])
    with pytest.raises(FloatingPointError, match=r'non-finite loss_rec at iteration 3'):
        runner.train()
    assert runner.iter == 2  # two good steps, the third stopped
    assert not osp.exists(osp.join(runner.work_dir, 'epoch_1.pth'))


@pytest.mark.parametrize('config', [TINY, TINY_DINO], ids=['mocov3', 'dino'])
def test_non_finite_loss_skip_leaves_every_parameter_and_buffer_unchanged(tmp_path, config):
    runner = _runner(tmp_path, 'skip', nan_iters=[1], config=config)
    runner.train()
    assert _hook(runner, 'NonFiniteLossHook').skipped == 1 and runner.iter == 4
    before = _hook(runner, '_RecordState').before
    # the skipped step (iteration index 1) changed nothing: weights, optimizer-free EMA copies
    # (MoCo v3's momentum encoder, DINO's teacher), their step counts, BN statistics, centre
    assert _changed(before[1], before[2]) == []
    # while a good step changes all of those kinds
    moved = _changed(before[2], before[3])
    kinds = (('momentum_encoder.', 'running_mean') if config == TINY else  # MoCo v3: BN necks
             ('teacher.', 'head.center'))
    for part in ('backbone.', 'decoder.') + kinds:
        assert any(part in k for k in moved), part
    for v in runner.model.state_dict().values():
        assert torch.isfinite(v.float()).all()


def test_max_skips_exhausted_stops_the_run_with_its_message(tmp_path):
    runner = _runner(tmp_path, 'skip', nan_iters=[0, 2], max_skips=1)
    with pytest.raises(FloatingPointError, match=r'non-finite loss_rec at iteration 3 \(epoch 1\)'
                       r', after max_skips=1 skipped steps'):
        runner.train()
    assert _hook(runner, 'NonFiniteLossHook').skipped == 1 and runner.iter == 2


def test_normal_steps_raise_no_warning(tmp_path):
    runner = _runner(tmp_path, 'skip', nan_iters=[])
    warn_always = torch.is_warn_always_enabled()
    # torch warns once a process about e.g. float() of a tensor that requires grad: every time
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            runner.train()
    finally:
        torch.set_warn_always(warn_always)
    assert runner.iter == 4 and _hook(runner, 'NonFiniteLossHook').skipped == 0


def test_skip_under_fp16_dynamic_loss_scaling_lowers_the_scale_as_grad_scaler_would(tmp_path):
    runner = _runner(tmp_path, 'skip', nan_iters=[1], max_skips=1,
                     optim_wrapper=dict(type='_CPUAmpOptimWrapper', loss_scale='dynamic'),
                     extra_hooks=[dict(type='_RecordLossScale')])
    runner.train()
    assert _hook(runner, 'NonFiniteLossHook').skipped == 1 and runner.iter == 4
    # A GradScaler given the same steps, the second with an inf gradient, as mmengine's
    # AmpOptimWrapper.step drives it: scale halved and growth tracker reset at the skip.
    reference = torch.amp.GradScaler('cpu')
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.)
    expected = {0: reference.state_dict()}
    for it, grad in enumerate([1., math.inf, 1., 1.]):
        reference.scale((weight * grad).sum()).backward()
        reference.step(optimizer)
        reference.update()
        optimizer.zero_grad()
        expected[it + 1] = reference.state_dict()
    assert expected[2]['scale'] == 32768. and expected[2]['_growth_tracker'] == 0
    assert _hook(runner, '_RecordLossScale').before == expected
    # training went on: the skip changed nothing, the steps after it trained
    before = _hook(runner, '_RecordState').before
    assert _changed(before[1], before[2]) == []
    assert any(k.startswith('backbone.') for k in _changed(before[2], before[3]))
    for v in runner.model.state_dict().values():
        assert torch.isfinite(v.float()).all()


def test_the_skip_count_is_saved_in_checkpoints_and_restored_by_resume(tmp_path):
    first = _runner(tmp_path, 'skip', nan_iters=[1], max_skips=1)
    first.train()  # epoch 1: iteration index 1 skipped, epoch_1.pth written
    assert _hook(first, 'NonFiniteLossHook').skipped == 1
    checkpoint = torch.load(osp.join(first.work_dir, 'epoch_1.pth'), weights_only=False)
    # resumed for epoch 2: one more NaN step is one more than max_skips=1
    resumed = _runner(tmp_path, 'skip', nan_iters=[5], max_skips=1, epochs=2, resume=True)
    with pytest.raises(FloatingPointError, match=r'non-finite loss_rec at iteration 6 \(epoch 2\)'
                       r', after max_skips=1 skipped steps'):
        resumed.train()
    assert resumed.iter == 5 and _hook(resumed, 'NonFiniteLossHook').skipped == 1
    assert checkpoint['message_hub']['runtime_info']['NonFiniteLossHook.skipped'] == 1
    # load_from (a new run from those weights) starts counting at 0
    fresh = _runner(tmp_path, 'skip', nan_iters=[1], max_skips=1,
                    load_from=osp.join(first.work_dir, 'epoch_1.pth'))
    fresh.train()
    assert _hook(fresh, 'NonFiniteLossHook').skipped == 1


def _ddp_worker(rank, port, images, work_dir):
    """One of 2 gloo ranks: skip mode with max_skips=1, NaN on rank 1 only at iterations 1, 3."""
    from repre_mm.utils.launch import adapt_to_machine
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2',
                      MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cfg = shrink_pretrain_cfg(Config.fromfile(TINY), images, work_dir, img=28)
    cfg.train_cfg.max_epochs = 3  # 8 images, 2 ranks x batch 2: 2 iterations an epoch
    cfg.launcher = 'pytorch'
    adapt_to_machine(cfg)  # gloo, CPU DDP wrapper
    cfg.env_cfg.dist_cfg.timeout = 60  # a rank left waiting fails in a minute, not 30
    cfg.custom_hooks = [dict(type='NonFiniteLossHook', action='skip', max_skips=1),
                        dict(type='_InjectNaN', iters=[1, 3], rank=1), dict(type='_RecordState')]
    runner = Runner.from_cfg(cfg)
    from repre_mm.engine import non_finite_hook
    calls, all_reduce = [], non_finite_hook.all_reduce
    try:
        with mock.patch.object(non_finite_hook, 'all_reduce',
                               lambda *a, **k: calls.append(1) or all_reduce(*a, **k)):
            runner.train()
        error = None
    except FloatingPointError as e:
        error = str(e)
    before = _hook(runner, '_RecordState').before
    torch.save(dict(error=error, iter=runner.iter,
                    skipped=_hook(runner, 'NonFiniteLossHook').skipped,
                    hook_all_reduces=len(calls),
                    changed_by_skip=_changed(before[1], before[2]),
                    changed_by_step=_changed(before[2], before[3]),
                    weights={k: v for k, v in before[3].items() if k.startswith('backbone.')}),
               osp.join(work_dir, f'rank{rank}.pth'))


def _run_two_ranks(target, port, *args, timeout=240):
    """``target(rank, port, *args)`` in 2 spawned processes; fails if one hangs or fails."""
    import torch.multiprocessing as mp
    ctx = mp.get_context('spawn')
    ranks = [ctx.Process(target=target, args=(r, port, *args)) for r in range(2)]
    for p in ranks:
        p.start()
    deadline = time.time() + timeout
    for p in ranks:
        p.join(max(1, deadline - time.time()))
    hung = [r for r, p in enumerate(ranks) if p.is_alive()]
    for p in ranks:
        if p.is_alive():
            p.kill()
    assert not hung, f'ranks {hung} hung'
    assert [p.exitcode for p in ranks] == [0, 0]


def test_ddp_non_finite_loss_on_one_rank_skips_and_stops_every_rank_together(tmp_path):
    images = write_images(str(tmp_path / 'img'), num=8, size=28)
    work = str(tmp_path / 'work')
    os.makedirs(work)
    _run_two_ranks(_ddp_worker, 29100 + os.getpid() % 800, images, work)
    r0, r1 = (torch.load(osp.join(work, f'rank{r}.pth'), weights_only=True) for r in range(2))
    # iteration index 1: both skipped (rank 0 saw finite losses); index 3: both stopped
    assert r0['skipped'] == r1['skipped'] == 1 and r0['iter'] == r1['iter'] == 3
    assert r1['error'].startswith('non-finite loss_rec at iteration 4 (epoch 2)')
    # decided from DDP's reduced gradients (every trainable parameter gets one): no all-reduce
    assert r0['error'].startswith('non-finite reduced gradients (the losses are finite on this '
                                  'rank) at iteration 4 (epoch 2)')
    assert r0['hook_all_reduces'] == r1['hook_all_reduces'] == 0
    assert 'after max_skips=1 skipped steps' in r0['error'] and 'max_skips=1' in r1['error']
    for r in (r0, r1):
        assert r['changed_by_skip'] == []
        assert any(k.startswith('momentum_encoder.') for k in r['changed_by_step'])
    for k, v in r0['weights'].items():  # DDP kept the ranks identical through the skip
        assert torch.equal(v, r1['weights'][k]), k


class _TwoLayers(BaseModel):
    """Test only: Linear, BatchNorm (a buffer the skip restores), Linear; a frozen layer, and
    optionally one no rank uses. ``nan_term`` makes a loss term NaN that reaches no trainable
    parameter (only the frozen layer), so the gradients stay finite unless the hook poisons
    them."""

    def __init__(self, unused=False):
        super().__init__()
        self.a, self.bn = torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8)
        self.b = torch.nn.Linear(8, 1)
        self.frozen = torch.nn.Linear(4, 1).requires_grad_(False)
        self.unused = torch.nn.Linear(1, 1) if unused else None
        self.nan_term = False

    def forward(self, inputs, data_samples=None, mode='loss'):
        term = self.frozen(inputs).mean() * (math.nan if self.nan_term else 0.)
        return dict(loss=self.b(self.bn(self.a(inputs))).pow(2).mean(), loss_frozen=term)


SETUPS = ('ddp', 'ddp_unused_parameter', 'no_ddp')


def _paths_worker(rank, port, work_dir):
    """One of 2 gloo ranks: 3 steps of each setup with the NaN term on rank 1 at index 1,
    counting every torch.distributed.all_reduce the steps make."""
    from datetime import timedelta
    from types import SimpleNamespace
    from mmengine.logging import MessageHub, MMLogger
    from mmengine.model import MMDistributedDataParallel
    from repre_mm.engine import NonFiniteLossHook
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2,
                                         timeout=timedelta(seconds=60))
    all_reduce, calls = torch.distributed.all_reduce, []

    def counted(*args, **kwargs):
        calls.append(1)
        return all_reduce(*args, **kwargs)

    results = {}
    for setup in SETUPS:
        torch.manual_seed(0)
        module = _TwoLayers(unused=setup == 'ddp_unused_parameter')
        model = module if setup == 'no_ddp' else MMDistributedDataParallel(
            module=module, find_unused_parameters=setup == 'ddp_unused_parameter')
        optim_wrapper = OptimWrapper(torch.optim.SGD(
            [p for p in module.parameters() if p.requires_grad], lr=0.1))
        runner = SimpleNamespace(model=model, optim_wrapper=optim_wrapper, iter=0, epoch=0,
                                 logger=MMLogger.get_current_instance(),
                                 message_hub=MessageHub.get_instance(f'paths-{setup}'))
        hook = NonFiniteLossHook(action='skip', max_skips=1)
        hook.before_train(runner)
        inputs = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(rank))
        states, skipped_at = [], []
        calls.clear()
        with mock.patch.object(torch.distributed, 'all_reduce', counted):
            for it in range(3):
                runner.iter = it
                module.nan_term = rank == 1 and it == 1
                hook.before_train_iter(runner, it)
                states.append({k: v.clone() for k, v in module.state_dict().items()})
                skipped = hook.skipped
                model.train_step(dict(inputs=inputs[it]), optim_wrapper)
                if hook.skipped > skipped:
                    skipped_at.append(it)
        states.append(module.state_dict())
        results[setup] = dict(all_reduces=len(calls), skipped_at=skipped_at,
                              changed_by_skip=_changed(states[1], states[2]),
                              changed_by_step=_changed(states[2], states[3]),
                              weights={k: p.detach() for k, p in module.named_parameters()})
    torch.save(results, osp.join(work_dir, f'rank{rank}.pth'))
    torch.distributed.destroy_process_group()


def test_ddp_skip_is_decided_from_the_reduced_gradients_without_an_all_reduce_of_its_own(tmp_path):
    """With DDP (every trainable parameter getting a gradient) the hook adds no all-reduce; with
    a parameter no rank uses, or without DDP, it all-reduces its flag once a step. Either way a
    NaN loss term on rank 1 only, one that reaches no trainable parameter, skips the same step
    on both ranks."""
    _run_two_ranks(_paths_worker, 29100 + (os.getpid() + 400) % 800, str(tmp_path), timeout=180)
    r0, r1 = (torch.load(osp.join(tmp_path, f'rank{r}.pth'), weights_only=True) for r in range(2))
    assert [r0[s]['all_reduces'] for s in SETUPS] == [r1[s]['all_reduces'] for s in SETUPS] == [
        0, 3, 3]
    for setup in SETUPS:
        for r in (r0, r1):
            assert r[setup]['skipped_at'] == [1], setup
            assert r[setup]['changed_by_skip'] == [], setup  # BatchNorm statistics included
            assert {'a.weight', 'b.weight', 'bn.running_mean'} <= set(r[setup]['changed_by_step'])
        if setup != 'no_ddp':  # DDP kept the ranks identical through the skip
            for k, v in r0[setup]['weights'].items():
                assert torch.equal(v, r1[setup]['weights'][k]), (setup, k)


def test_loading_a_mismatched_backbone_is_an_error_listing_keys(tmp_path):
    repre = MODELS.build(tiny_repre())
    path = str(tmp_path / 'ckpt.pth')
    torch.save({'state_dict': repre.state_dict()}, path)
    state = load_weights(path)
    load_strict(MODELS.build(tiny_vit()), state, prefix='backbone.')  # matches: no error
    wider = MODELS.build(tiny_vit(depth=6))
    with pytest.raises(KeyError, match=r'missing keys \[\'layers\.4\.'):
        load_strict(wider, state, prefix='backbone.')
    with pytest.raises(KeyError, match="no key starting with 'encoder.'"):
        load_strict(wider, state, prefix='encoder.')


def test_checkpoints_with_code_are_refused(tmp_path):
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'extra': print}, path)
    with pytest.raises(Exception, match='Unsupported global'):
        load_weights(path)


# Each fault the fuzz test injects, and the one message that names it.
FAULTS = {
    None: None,
    'level out of range': 'is out of range for a backbone with',
    'levels not shallow to deep': '`levels` must be distinct and ordered shallow to deep',
    'decoder widths of the wrong length': '`widths` needs one entry per x2 upsampling',
    'input size not divisible by the patch': 'is not divisible by the encoder stride',
}


def _random_config_with(fault, rng):
    """A random valid RePre config and input size (levels, negative ones too, widths, patch,
    upsampling, sizes), then exactly ``fault`` injected."""
    patch = rng.choice([2, 4, 8, 16])
    depth = rng.randint(2, 5)
    levels = sorted(rng.sample(range(depth), rng.randint(1, min(3, depth))))
    levels = [lv - depth if rng.random() < 0.3 else lv for lv in levels]  # from the end
    points = int(math.log2(patch))
    widths = None if rng.random() < 0.5 else [rng.choice([8, 16]) for _ in range(points)]
    size = [patch * rng.randint(max(1, 16 // patch), 40 // patch) for _ in range(2)]
    if fault == 'level out of range':
        levels[rng.randrange(len(levels))] = rng.choice([depth + rng.randint(0, 2),
                                                         -depth - 1 - rng.randint(0, 2)])
    elif fault == 'levels not shallow to deep':
        if len(levels) == 1:
            levels = [levels[0], levels[0]]  # the same block twice
        else:
            levels = levels[::-1]  # deep to shallow
    elif fault == 'decoder widths of the wrong length':
        widths = [rng.choice([8, 16]) for _ in range(points + rng.choice([-1, 1]))]
    elif fault == 'input size not divisible by the patch':
        size[rng.randrange(2)] += rng.randint(1, patch - 1)
    framework = tiny_mocov3(img_size=32, patch_size=patch, depth=depth, dims=16)
    cfg = tiny_repre(levels=tuple(levels), framework=framework,
                     decoder=dict(type='MultiLevelFusionDecoder', widths=widths,
                                  upsample=rng.choice(['pixel_shuffle', 'deconv', 'bilinear'])))
    return cfg, size


@pytest.mark.parametrize('seed', range(30))
def test_random_configs_run_or_fail_with_the_message_naming_the_fault(seed):
    """Random configs, each with one injected fault (or none, one seed in five): a clean one
    runs a step; a faulty one fails with the one message that names its fault."""
    import random
    fault = list(FAULTS)[seed % len(FAULTS)]
    cfg, size = _random_config_with(fault, random.Random(seed))

    def step():
        model = MODELS.build(cfg)
        return model.loss([torch.randn(2, 3, *size), torch.randn(2, 3, *size)], None)

    if fault is None:
        losses = step()
        assert torch.isfinite(losses['loss_rec']) and losses['loss_rec'] > 0
        return
    with pytest.raises((ValueError, KeyError, TypeError)) as error:
        step()
    assert FAULTS[fault] in str(error.value), (fault, repr(error.value))
    others = [m for f, m in FAULTS.items() if m and f != fault]
    assert not any(m in str(error.value) for m in others), repr(error.value)


def test_our_dataset_configs_load_images_with_load_image_or_skip():
    import glob
    for path in glob.glob(osp.join(ROOT, 'configs/_base_/datasets/*.py')):
        loads = []

        def collect(obj):
            if isinstance(obj, dict) and str(obj.get('type', '')).startswith('LoadImage'):
                loads.append(obj['type'])
            for v in (obj.values() if isinstance(obj, dict) else
                      obj if isinstance(obj, (list, tuple)) else []):
                collect(v)

        collect(Config.fromfile(path).to_dict())
        assert loads and set(loads) == {'LoadImageOrSkip'}, (path, loads)


def test_unreadable_image_is_named_or_skipped_and_counted(tmp_path):
    from mmpretrain.datasets import CustomDataset
    folder = write_images(str(tmp_path / 'img'), num=3, size=16)
    bad = osp.join(folder, '1.jpg')
    with open(bad, 'wb') as f:
        f.write(b'not a jpeg')

    def dataset(skip):
        return CustomDataset(data_root=folder, with_label=False, pipeline=[
            dict(type='LoadImageOrSkip', skip_unreadable=skip), dict(type='PackInputs')])

    strict = dataset(False)
    index = [i for i in range(3) if strict.get_data_info(i)['img_path'] == bad][0]
    with pytest.raises(OSError, match=r'cannot read image .*1\.jpg'):
        strict[index]
    lenient = dataset(True)
    sample = lenient[index]  # another, readable image instead
    assert sample['inputs'].shape == (3, 16, 16)
    # at least this one skip (the dataset's random re-draw may hit the bad file again)
    assert lenient.pipeline.transforms[0].skipped >= 1
