"""tools/benchmarks/gpu_check.sh: the prepared GPU check, run on CPU (--device cpu --quick), and
the checks it applies to a training run, shown to fail on a bad one."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(__file__))


def _gpu_check_module():
    spec = importlib.util.spec_from_file_location(
        'gpu_check', osp.join(ROOT, 'tools', 'benchmarks', 'gpu_check.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_check_runs_on_cpu_quick(tmp_path):
    out = str(tmp_path / 'report.json')
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    run = subprocess.run(['bash', 'tools/benchmarks/gpu_check.sh', '--device', 'cpu', '--quick',
                          '--work-dir', str(tmp_path / 'work'), '--out', out],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with open(out) as f:
        report = json.load(f)
    assert report['ok'] is True
    steps = report['steps']
    assert set(steps) == {'overhead', 'train', 'train_launcher_pytorch', 'knn'}
    [overhead] = steps['overhead']['runs']
    assert overhead['ok'] and overhead['result']['dtype'] == 'bfloat16'
    assert overhead['result']['time_ratio'] > 0 and overhead['result']['images_per_s']['repre'] > 0
    for name in ('train', 'train_launcher_pytorch'):
        train = steps[name]
        assert train['checks']['iterations'] and train['checks']['losses_finite'], train
        assert train['iterations'] == 8 and train['setup']['device'] == 'cpu'
        assert train['setup']['optim_wrapper'] == 'BF16AutocastOptimWrapper'  # --amp on CPU
        assert train['loss_scale'] is None  # no fp16 loss scaling on CPU
    assert steps['train']['setup']['backend'] is None
    launched = steps['train_launcher_pytorch']['setup']
    assert launched['backend'] == 'gloo' and launched['world_size'] == 1
    assert launched['model_wrapper'] == 'CPUDistributedDataParallel'
    knn = steps['knn']
    assert (knn['bank'], knn['queries'], knn['device']) == (16, 8, 'cpu')
    assert knn['amp_dtype'] == 'bfloat16' and knn['extract_s_per_1000_images'] > 0
    assert 0 <= knn['top1']['cls'] <= 100
    assert report['environment']['device'] == 'cpu' and report['environment']['mmpretrain']


def _health(tmp_path, iters, setup=None):
    work = tmp_path / 'run'
    work.mkdir(exist_ok=True)
    setup = dict(dict(backend='nccl', syncbn_layers=2, world_size=1), **(setup or {}))
    with open(work / 'health.json', 'w') as f:
        json.dump(dict(setup=setup, iters=iters), f)
    return str(work)


def test_training_checks_pass_a_healthy_run_and_fail_bad_ones(tmp_path):
    gpu_check = _gpu_check_module()
    args = type('Args', (), dict(iters=20, quick=False, device='cuda'))

    def iters(loss_rec=lambda i: 1.0 - i / 40, scale=lambda i: 65536.0, loss=lambda i: 5.0):
        return [dict(iter=i, time=0.1 * i, loss=loss(i), loss_rec=loss_rec(i),
                     loss_scale=scale(i)) for i in range(1, 21)]

    # early overflows halve the scale, then it settles: healthy
    healthy = gpu_check.read_health(
        _health(tmp_path, iters(scale=lambda i: 65536.0 if i < 3 else 32768.0)), args, True)
    assert healthy['ok'], healthy['checks']
    assert healthy['loss_scale']['decreases_at_iters'] == [3]
    # each failure is caught
    late_overflow = gpu_check.read_health(
        _health(tmp_path, iters(scale=lambda i: 65536.0 if i < 15 else 512.0)), args, True)
    assert not late_overflow['checks']['loss_scale_settled']
    nan = gpu_check.read_health(
        _health(tmp_path, iters(loss=lambda i: 'nan' if i == 7 else 5.0)), args, True)
    assert not nan['checks']['losses_finite']
    flat = gpu_check.read_health(_health(tmp_path, iters(loss_rec=lambda i: 1.0)), args, True)
    assert not flat['checks']['loss_rec_falls']
    no_syncbn = gpu_check.read_health(
        _health(tmp_path, iters(), dict(syncbn_layers=0, backend='gloo')), args, True)
    assert not no_syncbn['checks']['syncbn_built'] and not no_syncbn['checks']['nccl']
    short = gpu_check.read_health(_health(tmp_path, iters()[:15]), args, False)
    assert not short['checks']['iterations']


def test_gpu_check_sh_installs_nothing_without_a_wheel_folder(tmp_path):
    # a Python without the stack and no WHEELS_DIR: stop and say so, never reach for an index
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/bash\nexit 1\n')
    fake.chmod(0o755)
    run = subprocess.run(['bash', 'tools/benchmarks/gpu_check.sh', '--device', 'cpu'], cwd=ROOT,
                         env=dict(os.environ, PYTHON=str(fake)), capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert 'cannot import the stack and no WHEELS_DIR was given' in run.stderr


def test_without_a_gpu_it_says_so_and_shows_no_traceback(tmp_path):
    run = subprocess.run([sys.executable, 'tools/benchmarks/gpu_check.py', '--device', 'cuda',
                          '--work-dir', str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, CUDA_VISIBLE_DEVICES=''))
    assert run.returncode != 0
    assert 'torch sees no GPU' in run.stderr and '--device cpu --quick' in run.stderr
    assert 'Traceback' not in run.stderr


_STEPS_THEN_KILLED = '''
import importlib.util, os, signal, sys, time
spec = importlib.util.spec_from_file_location('gpu_check', sys.argv[1])
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)
gpu_check.environment = lambda args: dict(device=args.device)
gpu_check.step_overhead = lambda args: dict(ok=True, runs=[], limit=args.step_limit(300))
def killed(*args):  # a run stopped at the call's limit, mid-step
    os.kill(os.getpid(), signal.SIGKILL)
gpu_check.step_train = killed
sys.argv = ['gpu_check.py', '--device', 'cpu', '--quick'] + sys.argv[2:]
gpu_check.main()
'''


def test_a_killed_run_keeps_the_steps_that_finished(tmp_path):
    out = tmp_path / 'report.json'
    run = subprocess.run([sys.executable, '-c', _STEPS_THEN_KILLED,
                          osp.join(ROOT, 'tools', 'benchmarks', 'gpu_check.py'),
                          '--work-dir', str(tmp_path / 'work'), '--out', str(out),
                          '--budget', '100'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == -9  # killed in the train step
    report = json.loads(out.read_text())
    assert report['steps']['overhead']['ok'] and 'train' not in report['steps']
    assert report['finished'] is False and report['budget_s'] == 100
    # the overhead step's processes got its share of the budget, not their default 300 s
    assert 0 < report['steps']['overhead']['limit'] <= 35


def test_steps_that_no_longer_fit_the_budget_are_skipped_and_said(tmp_path):
    out = tmp_path / 'report.json'
    code = _STEPS_THEN_KILLED.replace('gpu_check.step_train = killed', '')
    run = subprocess.run([sys.executable, '-c', code,
                          osp.join(ROOT, 'tools', 'benchmarks', 'gpu_check.py'),
                          '--work-dir', str(tmp_path / 'work'), '--out', str(out), '--budget',
                          '30', '--only', 'overhead', 'train'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    report = json.loads(out.read_text())
    for step in ('overhead', 'train'):  # 35 % and 25 % of 30 s: under the 20 s a step needs
        assert not report['steps'][step]['ok']
        assert report['steps'][step]['skipped'].startswith('budget')
    assert report['finished'] is True
