"""tools/setup_env.sh's decisions (``--plan``), on machines faked with stub programs.

Each test builds a PATH holding only the basic tools the script needs plus fake ``python3.x`` /
``nvcc`` programs; a fake Python answers the script's one probe with facts stored beside it
(Python version, torch version and CUDA, mmcv and its ops). Nothing is installed: ``--plan``
prints the decisions and stops, and no real Python is reachable from the fake PATH.
"""
import hashlib
import os
import os.path as osp
import shutil
import stat
import subprocess
import time

import pytest

ROOT = osp.dirname(osp.dirname(__file__))
SCRIPT = osp.join(ROOT, 'tools', 'setup_env.sh')
TOOLS = ('bash', 'cat', 'sha256sum', 'cut', 'date', 'dirname', 'sed', 'head', 'mkdir', 'ls',
         'mktemp', 'mv', 'rm', 'du', 'touch', 'tail', 'nproc', 'basename', 'env')


def _executable(path, text):
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fake_python(path, version='3.11', torch='', cuda='', mmcv='', mmcv_ops='', runs=True):
    """A program that answers setup_env.sh's probe like a Python with these packages would."""
    os.makedirs(osp.dirname(path), exist_ok=True)
    facts = (f'python={version}\ntorch={torch}\ntorch_cuda={cuda}\ntorchvision=\n'
             f'mmcv={mmcv}\nmmcv_ops={mmcv_ops}\n')
    with open(path + '.facts', 'w') as f:
        f.write(facts)
    # a pyenv shim of a version that is not installed exits 127 with a message
    body = ('[[ "$1" == -c ]] && exec cat "$0.facts"\nexit 3\n' if runs else
            'echo "pyenv: $(basename "$0"): command not found" >&2\nexit 127\n')
    _executable(path, '#!/bin/bash\n' + body)
    return path


@pytest.fixture
def machine(tmp_path):
    """A fake machine: bin/ (basic tools only), an empty cache, no CUDA toolkit."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for tool in TOOLS:
        os.symlink(shutil.which(tool), bin_dir / tool)
    env = {'PATH': str(bin_dir), 'HOME': str(tmp_path / 'home'),
           'REPRE_MM_CACHE': str(tmp_path / 'cache'), 'CUDA_HOME': str(tmp_path / 'no-cuda')}

    def plan(**extra):
        run_env = dict(env, **extra)
        out = subprocess.run(['bash', SCRIPT, '--plan'], env=run_env, capture_output=True,
                             text=True, timeout=60)
        decisions = dict(line.split('=', 1) for line in out.stdout.splitlines() if '=' in line)
        return out.returncode, decisions, out.stderr

    return bin_dir, tmp_path, plan


def _toolkit(tmp):
    """A fake CUDA toolkit (bin/nvcc, include/); the environment that points at it."""
    home = tmp / 'cuda-12.8'
    (home / 'bin').mkdir(parents=True)
    (home / 'include').mkdir()
    (home / 'include' / 'cuda_runtime.h').write_text('')
    _executable(str(home / 'bin' / 'nvcc'), '#!/bin/bash\necho "release 12.8"\n')
    return {'CUDA_HOME': str(home)}


def test_gpu_machine_keeps_its_cuda_torch_and_builds_cuda_ops(machine):
    bin_dir, tmp, plan = machine
    # the GPU machines this project is lent: Python 3.12 with CUDA torch 2.11, no python3.11
    fake_python(str(bin_dir / 'python3.12'), '3.12', torch='2.11.0', cuda='12.8')
    rc, plan_, err = plan(REPRE_MM_VENV=str(tmp / 'venv'), **_toolkit(tmp))
    assert rc == 0, err
    assert plan_['python'] == f'{bin_dir}/python3.12 (3.12)'
    assert '--system-site-packages' in plan_['venv']  # sees that torch, installs no other
    assert plan_['torch'] == 'keep 2.11.0 (CUDA 12.8)'
    assert plan_['mmcv'].startswith(
        f'build 2.1.0 with cuda ops (MMCV_WITH_OPS=1 FORCE_CUDA=1 CUDA_HOME={tmp}/cuda-12.8; '
        f'nvcc {tmp}/cuda-12.8/bin/nvcc)')
    assert plan_['mmcv'].endswith('/cache/wheels/cp312-torch2.11.0-cuda12.8')
    assert plan_['stamp'] == 'missing'


def test_cuda_torch_without_nvcc_gets_cpu_ops_and_a_warning(machine):
    bin_dir, tmp, plan = machine
    venv = tmp / 'env'
    fake_python(str(venv / 'bin' / 'python'), '3.12', torch='2.11.0+cu128', cuda='12.8')
    rc, plan_, err = plan(REPRE_MM_VENV=str(venv))
    assert rc == 0, err
    assert plan_['env'] == str(venv) and plan_['env_source'] == 'REPRE_MM_VENV'
    assert plan_['torch'] == 'keep 2.11.0+cu128 (CUDA 12.8)'
    # mmcv's setup.py builds CUDA ops whenever torch sees a GPU: the build must not see one
    assert 'with cpu ops (MMCV_WITH_OPS=1 CUDA_VISIBLE_DEVICES=)' in plan_['mmcv']
    assert 'FORCE_CUDA' not in plan_['mmcv']
    assert 'nvcc was not found' in plan_['warning']


def test_cpu_machine_plan_is_the_ci_set_up(machine):
    bin_dir, tmp, plan = machine
    # a CUDA toolkit without a CUDA torch (this project's CPU machine has one)
    cuda = _toolkit(tmp)
    fake_python(str(bin_dir / 'python3.11'), '3.11')
    rc, plan_, err = plan(**cuda)
    assert rc == 0, err
    assert plan_['env'] == f'{tmp}/cache/venv' and plan_['env_source'] == 'default'
    assert plan_['venv'] == f'create with {bin_dir}/python3.11 -m venv (no flags)'
    assert plan_['torch'] == 'install torch==2.13.0'
    # existing venv with the CPU torch: CPU ops, in the cache folder used before CUDA builds
    fake_python(str(tmp / 'cache' / 'venv' / 'bin' / 'python'), '3.11', torch='2.13.0+cpu')
    rc, plan_, err = plan(**cuda)
    assert plan_['torch'] == 'keep 2.13.0+cpu (CPU build)'
    wheels = tmp / 'cache' / 'wheels' / 'cp311-torch2.13.0+cpu'
    assert plan_['mmcv'].startswith('build 2.1.0 with cpu ops (MMCV_WITH_OPS=1; nvcc ')
    assert plan_['mmcv'].endswith(f') into {wheels}')  # no FORCE_CUDA with a CPU torch
    wheels.mkdir(parents=True)
    (wheels / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').write_text('')
    assert plan(**cuda)[1]['mmcv'] == f'install the cached wheel in {wheels}'


def test_mmcv_is_kept_only_when_its_ops_match(machine):
    bin_dir, tmp, plan = machine
    python = str(tmp / 'env' / 'bin' / 'python')
    env = dict(REPRE_MM_VENV=str(tmp / 'env'), **_toolkit(tmp))
    fake_python(python, '3.12', torch='2.11.0', cuda='12.8', mmcv='2.1.0', mmcv_ops='cuda12.8')
    assert plan(**env)[1]['mmcv'] == 'keep 2.1.0 (cuda12.8 ops)'
    fake_python(python, '3.12', torch='2.11.0', cuda='12.8', mmcv='2.1.0', mmcv_ops='cpu')
    assert plan(**env)[1]['mmcv'].startswith('build 2.1.0 with cuda ops')
    fake_python(python, '3.12', torch='2.11.0', cuda='12.8', mmcv='2.2.0', mmcv_ops='cuda12.8')
    assert plan(**env)[1]['mmcv'].startswith('build 2.1.0 with cuda ops')  # mmdet 3.3 needs 2.1
    assert 'warning' not in plan(**env)[1]  # toolkit 12.8 with torch's CUDA 12.8
    fake_python(python, '3.12', torch='2.11.0', cuda='13.0')
    assert 'nvcc is CUDA 12.8 but torch was built with CUDA 13.0' in plan(**env)[1]['warning']


def test_python_3_10_to_3_12_first_that_runs_and_python_overrides(machine):
    bin_dir, tmp, plan = machine
    fake_python(str(bin_dir / 'python3.11'), '3.11', runs=False)  # an uninstalled pyenv shim
    fake_python(str(bin_dir / 'python3.10'), '3.10')
    fake_python(str(bin_dir / 'python3'), '3.13')
    fake_python(str(bin_dir / 'python3.13'), '3.13')
    rc, plan_, err = plan()
    assert rc == 0, err
    assert plan_['python'] == f'{bin_dir}/python3.10 (3.10)'
    rc, plan_, err = plan(PYTHON='python3.13')
    assert rc != 0 and 'no Python 3.10-3.12 found' in err
    assert 'python3.13: 3.13' in err
    os.remove(bin_dir / 'python3.10')
    rc, _, err = plan()
    assert rc != 0 and 'python3.11: does not run' in err and 'set PYTHON=' in err


def test_an_existing_environment_outside_3_10_to_3_12_is_refused(machine):
    _, tmp, plan = machine
    fake_python(str(tmp / 'env' / 'bin' / 'python'), '3.13', torch='2.11.0')
    rc, _, err = plan(REPRE_MM_VENV=str(tmp / 'env'))
    assert rc != 0 and 'has Python 3.13; repre-mm needs 3.10-3.12' in err


def test_an_activated_environment_with_torch_is_used(machine):
    bin_dir, tmp, plan = machine
    fake_python(str(bin_dir / 'python3.11'), '3.11')
    active = tmp / 'conda'
    fake_python(str(active / 'bin' / 'python'), '3.12', torch='2.11.0', cuda='12.8')
    rc, plan_, err = plan(CONDA_PREFIX=str(active))
    assert rc == 0, err
    assert plan_['env'] == str(active) and plan_['env_source'] == 'active'
    assert plan_['torch'] == 'keep 2.11.0 (CUDA 12.8)'
    # REPRE_MM_VENV wins; an activated environment without torch is not taken over
    assert plan(CONDA_PREFIX=str(active), REPRE_MM_VENV=str(tmp / 'v'))[1]['env'] == str(tmp / 'v')
    fake_python(str(active / 'bin' / 'python'), '3.12')
    assert plan(CONDA_PREFIX=str(active))[1]['env_source'] == 'default'


def _stamp_key():
    data = b''.join(open(osp.join(ROOT, 'requirements', f), 'rb').read()
                    for f in sorted(os.listdir(osp.join(ROOT, 'requirements')))
                    if f.endswith('.txt'))
    data += open(SCRIPT, 'rb').read()
    return hashlib.sha256(data).hexdigest()[:16]


def test_a_completed_set_up_is_skipped_at_once(machine):
    bin_dir, tmp, plan = machine
    venv = tmp / 'cache' / 'venv'
    fake_python(str(venv / 'bin' / 'python'), '3.11', torch='2.13.0+cpu')
    assert plan()[1]['stamp'] == 'missing'
    (venv / f'.repre-mm-setup-{_stamp_key()}').write_text('')
    rc, plan_, _ = plan()
    assert rc == 0 and plan_ == {'env': str(venv), 'env_source': 'default',
                                 'stamp': 'up-to-date'}
    # the real run (what run_tests.sh / CI do): prints the environment, probes nothing
    start = time.time()
    out = subprocess.run(['bash', SCRIPT], capture_output=True, text=True, timeout=60,
                         env={'PATH': str(bin_dir), 'HOME': str(tmp),
                              'REPRE_MM_CACHE': str(tmp / 'cache')})
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == str(venv)
    assert 'up to date' in out.stderr and time.time() - start < 5


@pytest.mark.parametrize('cores, workers, expected', [
    ('2', None, dict(workers='2', threads='1', parallel='-n 2 --dist loadfile')),
    ('8', None, dict(workers='4', threads='2', parallel='-n 4 --dist loadfile')),
    ('8', '1', dict(workers='1', threads='', parallel=None)),
])
def test_run_tests_spreads_the_test_files_over_a_worker_per_core(
        tmp_path, cores, workers, expected):
    """tools/run_tests.sh --plan on a machine of faked core count: one pytest-xdist worker per
    core (at most 4), a file per worker, the cores shared out as torch threads;
    REPRE_MM_TEST_WORKERS=1 runs one process without xdist."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    _executable(str(bin_dir / 'nproc'), f'#!/bin/sh\necho {cores}\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'REPRE_MM_TEST_WORKERS')}
    env['PATH'] = f'{bin_dir}{os.pathsep}{env["PATH"]}'
    if workers:
        env['REPRE_MM_TEST_WORKERS'] = workers
    out = subprocess.run(['bash', osp.join(ROOT, 'tools', 'run_tests.sh'), '--plan', '-k', 'x'],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    plan = dict(line.split('=', 1) for line in out.stdout.splitlines())
    assert plan['workers'] == expected['workers'] and plan['threads'] == expected['threads']
    assert plan['command'].endswith(' -k x')
    if expected['parallel']:
        assert expected['parallel'] in plan['command']
    else:
        assert ' -n ' not in plan['command']
