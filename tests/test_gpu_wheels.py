"""tools/benchmarks/gpu_wheels.sh's default bundle, installed offline by gpu_check.sh on a faked
GPU machine: one that has torch, torchvision and the packages such machines come with (numpy,
opencv-python-headless, pillow, scipy, matplotlib, pandas, rich, pyyaml, regex, tqdm, tabulate,
pytest) but no OpenMMLab package and no internet.

The bundle is built through gpu_wheels.sh (it needs PyPI) for this machine's Python, once per
version of the script, into $REPRE_MM_CACHE/gpu_wheels_test/ (default ~/.cache/repre-mm), and
reused. The fake machine is a venv with no pip and no packages of its own into which the
packages above, and what they need, are linked from this Python's site-packages; this
machine's opencv-python is shown under the name opencv-python-headless (the same cv2; a copy of
its .dist-info with the name changed), as a GPU machine's would be. gpu_check.sh then runs with
pip's configuration files off (no index, no find-links but the bundle).
"""
import hashlib
import importlib.metadata as md
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
from packaging.requirements import Requirement

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
WHEELS_SH = osp.join(ROOT, 'tools', 'benchmarks', 'gpu_wheels.sh')
CACHE = os.environ.get('REPRE_MM_CACHE') or osp.join(
    os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache'), 'repre-mm')
MACHINE_HAS = ('numpy', 'opencv-python-headless', 'pillow', 'scipy', 'matplotlib', 'pandas',
               'rich', 'pyyaml', 'regex', 'tqdm', 'tabulate', 'pytest', 'torch', 'torchvision')
# here opencv-python stands in for the GPU machine's opencv-python-headless
HERE = {'opencv-python-headless': 'opencv-python'}


def norm(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def wheel_name(filename):
    return norm(filename.split('-')[0])


@pytest.fixture(scope='module')
def bundle(tmp_path_factory):
    """The default bundle for this Python, built by gpu_wheels.sh (or the cached build of this
    very script)."""
    py = f'{sys.version_info.major}.{sys.version_info.minor}'
    key = hashlib.sha256(open(WHEELS_SH, 'rb').read()).hexdigest()[:12]
    folder = osp.join(CACHE, 'gpu_wheels_test', f'py{py}-{key}')
    if osp.exists(osp.join(folder, 'requirements.txt')):
        return folder, None
    building = f'{folder}.building-{os.getpid()}'
    shutil.rmtree(building, ignore_errors=True)
    run = subprocess.run(['bash', WHEELS_SH, building], capture_output=True, text=True,
                         env=dict(os.environ, PY_VERSION=py, PYTHON=sys.executable),
                         timeout=900)
    if run.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        probe = subprocess.run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps',
                                '--no-cache-dir', 'addict==2.4.0', '-d',
                                str(tmp_path_factory.mktemp('probe'))],
                               capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip(f'building the bundle needs PyPI, which pip cannot reach here, and no '
                        f'bundle of this gpu_wheels.sh is cached in {folder}')
        pytest.fail('gpu_wheels.sh failed:\n' + run.stderr[-4000:])
    os.replace(building, folder)
    return folder, run.stderr


def fake_gpu_machine(path):
    """A venv whose site-packages holds (as links) MACHINE_HAS and their dependencies, taken
    from this Python's site-packages, and nothing else."""
    subprocess.run([getattr(sys, '_base_executable', sys.executable), '-m', 'venv',
                    '--without-pip', str(path)], check=True)
    site = subprocess.run([str(path / 'bin' / 'python'), '-c',
                           'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                          check=True, capture_output=True, text=True).stdout.strip()
    here = sysconfig.get_paths()['purelib']
    seen, stack = set(), [HERE.get(n, n) for n in MACHINE_HAS]
    while stack:
        name = norm(stack.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:  # an optional one (a marker this machine meets)
            continue
        for text in dist.requires or ():
            req = Requirement(text)
            if not req.marker or req.marker.evaluate({'extra': ''}):
                stack.append(req.name)
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] != '..'}:
            if top.endswith('.dist-info') and name == 'opencv-python':
                info = osp.join(site, top.replace('opencv_python', 'opencv_python_headless'))
                shutil.copytree(osp.join(here, top), info)
                with open(osp.join(info, 'METADATA')) as f:
                    meta = re.sub(r'^Name: .*$', 'Name: opencv-python-headless', f.read(),
                                  count=1, flags=re.MULTILINE)
                with open(osp.join(info, 'METADATA'), 'w') as f:
                    f.write(meta)
            elif osp.exists(osp.join(here, top)) and not osp.exists(osp.join(site, top)):
                os.symlink(osp.join(here, top), osp.join(site, top))
    return str(path / 'bin' / 'python'), site


def test_default_bundle_carries_only_what_the_gpu_machine_lacks(bundle):
    folder, log = bundle
    wheels = sorted(f for f in os.listdir(folder) if f.endswith('.whl'))
    names = {wheel_name(f) for f in wheels}
    assert {'mmengine', 'mmcv-lite', 'mmpretrain', 'setuptools'} <= names
    # the small pure-Python dependencies the machine lacks go in ...
    assert {'addict', 'termcolor', 'yapf', 'einops', 'mat4py', 'modelindex'} <= names, names
    # ... and nothing it has, nor opencv-python (mmengine names it; headless gives the same cv2)
    assert not names & {norm(n) for n in MACHINE_HAS + ('opencv-python', 'opencv-python-headless',
                                                        'contourpy', 'fonttools', 'packaging')}
    size = sum(osp.getsize(osp.join(folder, f)) for f in wheels)
    assert size <= 40e6, f'{size / 1e6:.1f} MB'
    pinned = [line.strip() for line in open(osp.join(folder, 'requirements.txt'))
              if line.strip() and not line.startswith('#')]
    assert sorted(norm(p.split('==')[0]) for p in pinned) == sorted(names)
    assert all('==' in p for p in pinned)
    if log is not None:  # built now: the size is printed
        assert re.search(rf'bundle: {len(wheels)} wheels, [\d.]+ MB', log), log[-2000:]


def test_default_bundle_installs_offline_and_the_quick_check_passes(bundle, tmp_path):
    folder, _ = bundle
    python, base_site = fake_gpu_machine(tmp_path / 'machine')
    probe = subprocess.run([python, '-c', 'import torch, numpy, cv2, matplotlib, '
                            'scipy, pandas; import mmengine'], capture_output=True, text=True)
    assert 'No module named \'mmengine\'' in probe.stderr, probe.stderr  # the fake is sound
    venv = tmp_path / 'venv'
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(('PIP_', 'PYTHON', 'VIRTUAL_ENV'))}
    env.update(PYTHON=python, GPU_CHECK_VENV=str(venv), OMP_NUM_THREADS='1',
               PIP_CONFIG_FILE=os.devnull,  # no index, no find-links, no constraints from here
               PATH=os.pathsep.join(p for p in env['PATH'].split(os.pathsep)
                                    if osp.dirname(sys.executable) != p))
    out = str(tmp_path / 'report.json')
    run = subprocess.run(['bash', 'tools/benchmarks/gpu_check.sh', folder, '--device', 'cpu',
                          '--quick', '--work-dir', str(tmp_path / 'work'), '--out', out],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert 'pip --no-index --no-deps' in run.stderr
    assert '[gpu_check.sh] warning' not in run.stderr  # every requirement met, in version too
    with open(out) as f:
        report = json.load(f)
    assert report['ok'] is True, report
    assert set(report['steps']) == {'overhead', 'train', 'train_launcher_pytorch', 'knn'}
    # the venv got the OpenMMLab stack and its small dependencies, and none of the machine's
    # packages was replaced or shadowed there: numpy, cv2, torch ... come from the machine
    own = subprocess.run([str(venv / 'bin' / 'python'), '-c',
                          'import sysconfig, os; print(*os.listdir(sysconfig.get_paths()['
                          '"purelib"]))'], capture_output=True, text=True, check=True)
    own = {norm(n.split('-')[0]) for n in own.stdout.split() if n.endswith('.dist-info')}
    assert {'mmengine', 'mmcv-lite', 'mmpretrain', 'addict', 'yapf', 'termcolor'} <= own, own
    assert not own & {norm(n) for n in MACHINE_HAS + ('opencv-python', 'packaging')}, own
    where = subprocess.run([str(venv / 'bin' / 'python'), '-c',
                            'import numpy, cv2, torch, matplotlib; '
                            'print(numpy.__file__, cv2.__file__, torch.__file__)'],
                           capture_output=True, text=True, check=True).stdout.split()
    assert all(p.startswith(base_site) for p in where), (where, base_site)
