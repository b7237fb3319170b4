"""tools/train.py, tools/test.py and tools/dist_train.sh as a user runs them (subprocesses)."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest

from helpers import write_images

ROOT = osp.dirname(osp.dirname(__file__))
TINY = osp.join(ROOT, 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py')


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
               OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', PYTHON=sys.executable)
    return env


def _options(data_root, epochs=2, batch=4):
    # 16 images, batch 4 -> 4 iterations an epoch; k-NN hook off (it is tested on its own).
    return [
        '--cfg-options', f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.dataset.data_prefix=', f'train_dataloader.batch_size={batch}',
        'train_dataloader.num_workers=0', f'train_cfg.max_epochs={epochs}', 'custom_hooks=[]',
        'default_hooks.logger.interval=1', 'randomness.deterministic=True'
    ]


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    return write_images(str(tmp_path_factory.mktemp('images')), num=16, size=32)


def _scalars(work_dir):
    """The train-step records of mmengine's scalars.json (one JSON object a line)."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json')) as f:
        return [json.loads(line) for line in f if '"loss"' in line]


def test_train_writes_checkpoints_and_logs(images, tmp_path):
    work = str(tmp_path / 'work')
    subprocess.run([sys.executable, 'tools/train.py', TINY, '--work-dir', work] +
                   _options(images, epochs=1), cwd=ROOT, env=_env(), check=True, timeout=300)
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
    records = _scalars(work)
    assert len(records) == 4 and all('loss_rec' in r and 'eta' not in r for r in records)


def test_resume_auto_continues_a_killed_run(images, tmp_path):
    work = str(tmp_path / 'work')
    epochs = 12
    cmd = [sys.executable, 'tools/train.py', TINY, '--work-dir', work] + _options(images, epochs)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    # mmengine writes epoch_N.pth, then the `last_checkpoint` pointer that --resume reads
    while not osp.exists(osp.join(work, 'last_checkpoint')) and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(osp.join(work, 'last_checkpoint')) as f:
        latest = int(osp.basename(f.read().strip())[6:-4])
    assert latest < epochs, 'the run was not killed mid-way'

    out = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=_env(), timeout=300,
                         capture_output=True, text=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    # torch >= 2.6 loads with weights_only=True: this needs repre_mm.compat's safe globals
    assert f'resumed epoch: {latest}' in log, log[-3000:]
    assert osp.exists(osp.join(work, f'epoch_{epochs}.pth'))


def test_dist_train_two_cpu_processes(images, tmp_path):
    work = str(tmp_path / 'work')
    env = _env()
    env['PORT'] = str(29500 + os.getpid() % 1000)
    out = subprocess.run(['bash', 'tools/dist_train.sh', TINY, '2', '--work-dir', work] +
                         _options(images, epochs=1, batch=2), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'Distributed launcher: pytorch' in log or 'world_size: 2' in log.lower() or \
        'World size: 2' in log, log[-3000:]
    # 16 images over 2 ranks x batch 2 -> 4 iterations, checkpoint written once (rank 0)
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth']
    assert len(_scalars(work)) == 4


def test_amp_on_cpu_trains_with_bf16_autocast(images, tmp_path):
    work = str(tmp_path / 'work')
    out = subprocess.run([sys.executable, 'tools/train.py', TINY, '--work-dir', work, '--amp'] +
                         _options(images, epochs=1), cwd=ROOT, env=_env(), timeout=300,
                         capture_output=True, text=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "type='BF16AutocastOptimWrapper'" in log  # the dumped config
    records = _scalars(work)
    assert len(records) == 4 and all(0 < r['loss_rec'] < 10 for r in records)


def _exact_cfg(tmp_path, images, epochs, workers=0, keep=-1, persistent=False,
               hooks="dict(type='NonFiniteLossHook'), dict(type='RandomStateCheckpointHook')"):
    """The tiny RePre config with this test's data, deterministic, logging every iteration."""
    path = str(tmp_path / f'exact_w{workers}_{len(hooks)}_{persistent}.py')
    with open(path, 'w') as f:
        f.write(f"""_base_ = {TINY!r}
train_dataloader = dict(batch_size=4, num_workers={workers}, persistent_workers={persistent},
                        dataset=dict(data_root={images!r}, data_prefix=''))
train_cfg = dict(max_epochs={epochs})
custom_hooks = [{hooks}]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts={keep}))
randomness = dict(seed=0, deterministic=True)
""")
    return path


def _losses_by_iter(work_dir):
    return {r['iter']: (r['loss'], r['loss_rec']) for r in _scalars(work_dir)}


def _assert_same_losses(resumed, expected, first):
    assert sorted(resumed) == list(range(first, max(expected) + 1))
    for it in resumed:
        assert resumed[it] == pytest.approx(expected[it], rel=1e-5, abs=1e-6), it


def _pointer_epoch(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return int(osp.basename(f.read().strip())[6:-4])


EPOCHS = 4  # 16 images, batch 4: 16 iterations


@pytest.fixture(scope='module')
def reference(images, tmp_path_factory):
    """An uninterrupted run: its work directory (every epoch's checkpoint) and its losses."""
    tmp = tmp_path_factory.mktemp('reference')
    work = str(tmp / 'work')
    subprocess.run([sys.executable, 'tools/train.py', _exact_cfg(tmp, images, EPOCHS),
                    '--work-dir', work], cwd=ROOT, env=_env(), check=True, timeout=300,
                   capture_output=True)
    expected = _losses_by_iter(work)
    assert sorted(expected) == list(range(1, 4 * EPOCHS + 1))
    return work, expected


def test_resumed_run_reproduces_the_uninterrupted_losses(images, reference, tmp_path):
    cfg = _exact_cfg(tmp_path, images, EPOCHS)
    work = str(tmp_path / 'work')
    cmd = [sys.executable, 'tools/train.py', cfg, '--work-dir', work]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not osp.exists(osp.join(work, 'last_checkpoint')) and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-epoch: a checkpoint exists, the run goes on
    proc.wait()
    latest = _pointer_epoch(work)
    assert latest < EPOCHS
    subprocess.run(cmd + ['--resume'], cwd=ROOT, env=_env(), check=True, timeout=300,
                   capture_output=True)
    _assert_same_losses(_losses_by_iter(work), reference[1], first=latest * 4 + 1)


# Test only, put on PYTHONPATH: the fsync of the checkpoint named in REPRE_TEST_BLOCK_SAVE (the
# data written, the rename not done) keeps only half of the bytes, says so in a flag file and
# waits to be killed: the process dies in the middle of that save.
_BLOCK_SAVE = """
import os, signal
_target, _fsync = os.environ.get('REPRE_TEST_BLOCK_SAVE'), os.fsync

def _fsync_or_die_here(fd):
    path = os.readlink(f'/proc/self/fd/{fd}')
    if _target and os.path.basename(path).startswith('.' + _target + '.'):
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        with open(os.environ['REPRE_TEST_BLOCKED'], 'w') as f:
            f.write(path)
        signal.pause()
    return _fsync(fd)

os.fsync = _fsync_or_die_here
"""


def test_run_killed_while_writing_a_checkpoint_resumes_from_the_previous_one(
        images, reference, tmp_path):
    hooks = tmp_path / 'sitecustomize'
    hooks.mkdir()
    (hooks / 'sitecustomize.py').write_text(_BLOCK_SAVE)
    blocked = str(tmp_path / 'blocked')
    work = str(tmp_path / 'work')
    # max_keep_ckpts=2, as in the shipped config
    cmd = [sys.executable, 'tools/train.py', _exact_cfg(tmp_path, images, EPOCHS, keep=2),
           '--work-dir', work]
    env = _env()
    env.update(PYTHONPATH=str(hooks) + os.pathsep + env['PYTHONPATH'],
               REPRE_TEST_BLOCK_SAVE='epoch_3.pth', REPRE_TEST_BLOCKED=blocked)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while not osp.exists(blocked) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert osp.exists(blocked), 'the run never reached the save of epoch_3.pth'
    # killed mid-save: half a checkpoint under a temporary name, nothing under the final one
    [partial] = [f for f in os.listdir(work) if f.startswith('.epoch_3.pth.partial-')]
    assert osp.getsize(osp.join(work, partial)) < osp.getsize(osp.join(reference[0],
                                                                       'epoch_3.pth'))
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['epoch_1.pth',
                                                                         'epoch_2.pth']
    assert _pointer_epoch(work) == 2  # epoch_1.pth is removed only once epoch_3.pth exists

    out = subprocess.run(cmd + ['--resume'], cwd=ROOT, env=_env(), timeout=300,
                         capture_output=True, text=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'resumed epoch: 2' in log, log[-3000:]
    _assert_same_losses(_losses_by_iter(work), reference[1], first=2 * 4 + 1)
    # the resumed run's first save removed the killed one's temporary file
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth') or '.partial-' in f) == [
        'epoch_3.pth', 'epoch_4.pth']


def test_resume_from_a_given_checkpoint(images, reference, tmp_path):
    work = str(tmp_path / 'work')
    os.makedirs(work)
    # the work directory's pointer names another checkpoint: --resume PATH wins
    with open(osp.join(work, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(reference[0], 'epoch_3.pth'))
    out = subprocess.run([sys.executable, 'tools/train.py', _exact_cfg(tmp_path, images, EPOCHS),
                          '--work-dir', work, '--resume', osp.join(reference[0], 'epoch_1.pth')],
                         cwd=ROOT, env=_env(), timeout=300, capture_output=True, text=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert 'resumed epoch: 1' in log, log[-3000:]
    _assert_same_losses(_losses_by_iter(work), reference[1], first=1 * 4 + 1)


def test_without_the_random_state_hook_a_resumed_run_differs(images, reference, tmp_path):
    # the negative control of the exact-resume tests: the checkpoint holds the generators, but
    # nothing restores them
    work = str(tmp_path / 'work')
    cfg = _exact_cfg(tmp_path, images, EPOCHS, hooks="dict(type='NonFiniteLossHook')")
    subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir', work, '--resume',
                    osp.join(reference[0], 'epoch_1.pth')], cwd=ROOT, env=_env(), check=True,
                   timeout=300, capture_output=True)
    resumed = _losses_by_iter(work)
    assert sorted(resumed) == list(range(5, 4 * EPOCHS + 1))
    assert resumed[5] != pytest.approx(reference[1][5], rel=1e-5, abs=1e-6)


def _full_and_resumed_with_workers(images, tmp_path, persistent, epochs=3):
    cfg = _exact_cfg(tmp_path, images, epochs, workers=2, persistent=persistent)
    full, resumed = str(tmp_path / 'full'), str(tmp_path / 'resumed')
    subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir', full], cwd=ROOT,
                   env=_env(), check=True, timeout=300, capture_output=True)
    subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir', resumed, '--resume',
                    osp.join(full, 'epoch_1.pth')], cwd=ROOT, env=_env(), check=True,
                   timeout=300, capture_output=True)
    expected = _losses_by_iter(full)
    assert sorted(expected) == list(range(1, 4 * epochs + 1))
    return expected, _losses_by_iter(resumed)


def test_exact_resume_with_two_dataloader_workers(images, tmp_path):
    # worker processes draw the augmentations: mmengine seeds them from (seed, rank, worker),
    # and with persistent_workers=False every epoch restarts them from those seeds
    expected, resumed = _full_and_resumed_with_workers(images, tmp_path, persistent=False)
    _assert_same_losses(resumed, expected, first=5)


def test_persistent_workers_make_the_resume_inexact(images, tmp_path):
    # persistent workers carry their random streams over epochs; no checkpoint holds them, and
    # the resumed run's new workers start from the seeds again
    expected, resumed = _full_and_resumed_with_workers(images, tmp_path, persistent=True)
    assert sorted(resumed) == list(range(5, 13))
    assert resumed[5] != pytest.approx(expected[5], rel=1e-5, abs=1e-6)


def test_empty_data_root_fails_before_training_with_the_fix(tmp_path):
    from mmengine.config import Config
    from repre_mm.utils.launch import check_data_paths
    cfg = Config(dict(train_dataloader=dict(dataset=dict(data_root=str(tmp_path)))))
    with pytest.raises(FileNotFoundError, match=r'is empty\. .*--cfg-options '
                       r'train_dataloader\.dataset\.data_root=/path/to/data'):
        check_data_paths(cfg)
    (tmp_path / 'a.jpg').write_bytes(b'')
    check_data_paths(cfg)  # not empty: no error


def test_missing_data_root_fails_before_training_with_the_fix(tmp_path):
    out = subprocess.run([sys.executable, 'tools/train.py', TINY, '--work-dir',
                          str(tmp_path / 'w'), '--cfg-options',
                          f'train_dataloader.dataset.data_root={tmp_path}/nowhere'],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'train_dataloader.dataset.data_root' in out.stderr and 'does not exist' in out.stderr
    assert '--cfg-options train_dataloader.dataset.data_root=/path/to/data' in out.stderr


@pytest.mark.parametrize('args,installs', [(['--data', 'some/folder'], False), ([], True)])
def test_run_demo_installs_fashion_mnist_only_when_it_uses_it(tmp_path, args, installs):
    """`run_demo.sh --data PATH` brings its own images: no apt-get of a dataset it will not
    read. A stand-in apt-get records its calls; small_scale.py --help ends the demo at once."""
    if osp.exists('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz') or \
            os.getuid() != 0:
        pytest.skip('the demo installs Fashion-MNIST only as root on a machine without it')
    ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
    bin_dir, calls = tmp_path / 'bin', tmp_path / 'calls'
    bin_dir.mkdir()
    (bin_dir / 'apt-get').write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (bin_dir / 'apt-get').chmod(0o755)
    env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}')
    out = subprocess.run(['bash', 'tools/run_demo.sh', *args, '--help'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert calls.exists() == installs, out.stdout


def test_importing_the_stack_prints_no_setuptools_warning():
    """setuptools >= 81 warns "pkg_resources is deprecated" when mmengine / mmcv import it:
    repre_mm silences that message (only it) before importing them, so no tool or training
    subprocess starts with it. Without the filter the same imports print it, where the
    installed setuptools still warns."""
    # a config with an `mmpretrain::` base makes mmengine look the package up: that imports it
    stack = ('import mmengine.runner, mmcv, mmpretrain; from mmengine.utils import '
             'get_installed_path; get_installed_path("mmpretrain")')
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop('PYTHONWARNINGS', None)
    plain = subprocess.run([sys.executable, '-c', stack], capture_output=True, text=True,
                           env=env, timeout=120)
    ours = subprocess.run([sys.executable, '-c', f'import repre_mm; {stack}; '
                           'import warnings; warnings.warn("still shown", UserWarning)'],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert 'pkg_resources' not in ours.stderr
    assert 'still shown' in ours.stderr  # other warnings are not silenced
    import setuptools
    if int(setuptools.__version__.split('.')[0]) >= 81:
        assert 'pkg_resources is deprecated' in plain.stderr  # the filter is what removes it


def test_slurm_train_builds_the_srun_command(tmp_path):
    """tools/slurm_train.sh as mmpretrain's: the srun call it makes (a fake srun on PATH records
    it; no Slurm cluster here) asks for GPUS tasks, GPUS_PER_NODE a node, and runs
    tools/train.py with the slurm launcher and the work directory."""
    record = tmp_path / 'srun_args'
    fake = tmp_path / 'bin' / 'srun'
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{fake.parent}:{os.environ["PATH"]}', GPUS='16',
               GPUS_PER_NODE='8', SRUN_ARGS='--quotatype=auto')
    proc = subprocess.run(['bash', 'tools/slurm_train.sh', 'gpu', 'repre', 'CONFIG.py',
                           'work_dirs/x', '--resume'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    args = record.read_text().split('\n')
    for expected in ('-p', 'gpu', '--job-name=repre', '--gres=gpu:8', '--ntasks=16',
                     '--ntasks-per-node=8', '--kill-on-bad-exit=1', '--quotatype=auto',
                     'CONFIG.py', '--work-dir=work_dirs/x', '--launcher=slurm', '--resume'):
        assert expected in args, (expected, args)
    assert any(a.endswith('tools/train.py') for a in args)
