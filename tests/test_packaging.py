"""What OpenMMLab users reach for after `pip install`: the repre_mm:: config scope, `mim train`,
the model index, and the feature-extraction API."""
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
import torch

ROOT = osp.dirname(osp.dirname(__file__))
PY = sys.executable
SMALL = 'repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py'
TINY = 'configs/repre/repre_mocov3_vit-tiny-p4_1xb128-coslr-20e_fashion-mnist.py'


def _clean_env(**extra):
    """The environment of a user outside this checkout: no PYTHONPATH to the repo."""
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(extra)
    return env


def _clean_copy(dest):
    """The files of this checkout that git tracks or would track (a fresh clone plus work not yet
    committed), copied to dest: no build leftovers (repre_mm/.mim, *.egg-info, build/)."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if osp.isfile(osp.join(ROOT, f)):
            os.makedirs(dest / osp.dirname(f), exist_ok=True)
            shutil.copy2(osp.join(ROOT, f), dest / f)
    return dest


def _files_under(folder):
    """Every file below folder (recursively), relative to it; bytecode left out."""
    return {osp.relpath(osp.join(d, f), folder) for d, _, files in os.walk(folder)
            for f in files if '__pycache__' not in d and not f.endswith('.pyc')}


def _repre_configs():
    """configs/repre/**/*.py, subfolders (ablations/) included."""
    folder = osp.join(ROOT, 'configs', 'repre')
    return {osp.join('configs', 'repre', f) for f in _files_under(folder) if f.endswith('.py')}


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """repre-mm built as a wheel from a clean copy of the tracked files, installed into a folder
    of its own (no deps: the stack is already in this environment)."""
    base = tmp_path_factory.mktemp('pkg')
    src = _clean_copy(base / 'src')
    proc = subprocess.run([PY, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                           '-w', str(base / 'dist'), str(src)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel, ) = os.listdir(base / 'dist')
    target = base / 'site'
    proc = subprocess.run([PY, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                           str(target), str(base / 'dist' / wheel)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(wheel=str(base / 'dist' / wheel), site=str(target), base=base)


def test_wheel_carries_configs_tools_and_model_index(installed):
    names = set(zipfile.ZipFile(installed['wheel']).namelist())
    assert f'repre_mm/.mim/configs/{SMALL}' in names
    assert 'repre_mm/.mim/configs/_base_/datasets/fashion_mnist_mocov3.py' in names
    assert 'repre_mm/.mim/tools/train.py' in names and 'repre_mm/.mim/tools/dist_train.sh' in names
    assert 'repre_mm/.mim/model-index.yml' in names
    assert 'repre_mm/.mim/configs/repre/metafile.yml' in names
    assert not any('__pycache__' in n for n in names)


def test_a_user_config_inherits_through_the_repre_mm_scope(installed, tmp_path):
    user_cfg = tmp_path / 'my_repre.py'
    user_cfg.write_text(f"_base_ = 'repre_mm::{SMALL}'\n"
                        "model = dict(rec_head=dict(loss_weight=0.5))\n")
    code = ('import repre_mm, mmengine.config as c; '
            f'cfg = c.Config.fromfile({str(user_cfg)!r}); '
            'print(repre_mm.__file__); print(cfg.model.type, cfg.model.levels, '
            'cfg.model.rec_head.loss_weight, cfg.train_dataloader.batch_size)')
    proc = subprocess.run([PY, '-c', code], cwd=str(tmp_path), capture_output=True, text=True,
                          env=_clean_env(PYTHONPATH=installed['site']))
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, values = proc.stdout.strip().splitlines()[-2:]
    assert where.startswith(installed['site'])  # the installed copy, not this checkout
    assert values == 'RePre (2, 5, 8, 11) 0.5 256'


def test_mim_train_finds_the_package_config_and_tool(installed, tmp_path):
    import mim  # openmim: installed by tools/setup_env.sh (--no-deps, see there)
    # mim resolves a config name inside the package and runs its .mim/tools/train.py; a
    # dry config check (--cfg-options that make the run fail fast) is enough to show both.
    env = _clean_env(PYTHONPATH=installed['site'] + os.pathsep + osp.dirname(
        osp.dirname(mim.__file__)))
    proc = subprocess.run(
        [PY, '-m', 'mim', 'train', 'repre_mm', SMALL.split('/')[1], '--gpus', '0',
         '--work-dir', str(tmp_path / 'w'), '-y', '--cfg-options',
         'train_dataloader.dataset.data_root=/nonexistent/imagenet'],
        cwd=str(tmp_path), capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert 'repre_mm/.mim/tools/train.py' in out or '.mim/tools/train.py' in out, out[-3000:]
    assert '/nonexistent/imagenet' in out, out[-3000:]  # our train.py's data_root check ran


def test_model_index_lists_every_repre_config():
    """Every config below configs/repre/, ablations/ included, once, under its own name."""
    import modelindex
    index = modelindex.load(osp.join(ROOT, 'model-index.yml'))
    listed = [m.config.filepath if hasattr(m.config, 'filepath') else m.config
              for m in index.models]
    shipped = _repre_configs()
    assert any('/ablations/' in c for c in shipped)  # the walk went below configs/repre
    assert sorted(listed) == sorted(shipped)
    for model in index.models:
        assert model.name == osp.basename(model.config)[:-3]
        assert model.in_collection == 'RePre' and model.weights is None


def _tiny_checkpoint(tmp_path):
    from repre_mm.apis import init_model
    torch.manual_seed(0)
    model = init_model(osp.join(ROOT, TINY))
    with torch.no_grad():  # weights unlike the initial ones
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = str(tmp_path / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict()), path)
    return path


def test_extract_features_equals_the_knn_features(tmp_path):
    """repre_mm.apis.extract_features on image files == the k-NN tool's features
    (CustomDataset loader + data_preprocessor + final-norm tokens)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from repre_mm.apis import extract_features, init_model
    from repre_mm.evaluation import features_from_dataloader
    from helpers import write_images
    init_default_scope('mmpretrain')
    folder = write_images(str(tmp_path / 'imgs'), num=3, size=28, with_classes=True)
    ckpt = _tiny_checkpoint(tmp_path)
    model = init_model(osp.join(ROOT, TINY), ckpt)
    loader = Runner.build_dataloader(dict(
        batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
        collate_fn=dict(type='default_collate'),
        dataset=dict(type='CustomDataset', data_root=folder,
                     pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')])))
    expected, _ = features_from_dataloader(model, loader)
    paths = [loader.dataset.get_data_info(i)['img_path'] for i in range(len(loader.dataset))]
    feats = extract_features(osp.join(ROOT, TINY), ckpt, paths)
    assert feats['cls'].shape == (6, 128) and feats['patch'].shape == (6, 128, 7, 7)
    torch.testing.assert_close(feats['cls'], expected['cls'], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats['patch_mean'], expected['patch_mean'], rtol=1e-4,
                               atol=1e-4)
    torch.testing.assert_close(feats['patch'].mean((2, 3)), feats['patch_mean'])
    # the initial weights give other features: the checkpoint was really loaded
    untrained = extract_features(osp.join(ROOT, TINY), None, paths)
    assert not torch.allclose(untrained['cls'], feats['cls'])


def test_init_model_refuses_a_checkpoint_of_another_model(tmp_path):
    from repre_mm.apis import init_model
    path = str(tmp_path / 'other.pth')
    torch.save({'backbone.layers.0.weight': torch.zeros(2)}, path)
    with pytest.raises(KeyError, match='unexpected keys'):
        init_model(osp.join(ROOT, TINY), path)


def test_readme_timm_snippet_gives_the_same_features(tmp_path):
    """The README's timm snippet on a ViT-S/16 RePre checkpoint: vit_layouts.py --to timm, then
    timm.create_model('vit_small_patch16_224', num_heads=12, num_classes=0): its CLS token after
    the final norm equals repre_mm.apis.extract_features(...)['cls']."""
    import cv2
    import numpy as np
    import timm

    from repre_mm.apis import extract_features, init_model
    config = osp.join(ROOT, 'configs', SMALL)
    torch.manual_seed(0)
    model = init_model(config)
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    ckpt = str(tmp_path / 'repre_vit-s.pth')
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    proc = subprocess.run([PY, 'tools/model_converters/vit_layouts.py', ckpt,
                           str(tmp_path / 'vit-s_timm.pth'), '--to', 'timm'], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    images = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f'{i}.png'))
        cv2.imwrite(paths[-1], image[..., ::-1])
    ours = extract_features(model, images=paths)['cls']

    vit = timm.create_model('vit_small_patch16_224', num_heads=12, num_classes=0)
    vit.load_state_dict(torch.load(tmp_path / 'vit-s_timm.pth', weights_only=True))
    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() - mean) / std
    with torch.no_grad():
        theirs = vit.eval().forward_features(x)[:, 0]
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)


def test_mim_search_lists_every_config(installed, tmp_path):
    import mim
    env = _clean_env(PYTHONPATH=installed['site'] + os.pathsep + osp.dirname(
        osp.dirname(mim.__file__)))
    proc = subprocess.run([PY, '-m', 'mim', 'search', 'repre_mm'], cwd=str(tmp_path),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ids = set(re.findall(r'config id: (\S+)', proc.stdout))
    assert ids == {osp.basename(c)[:-3] for c in _repre_configs()}


def test_an_sdist_of_a_clean_copy_installs_with_the_configs(tmp_path):
    """setup.py sdist in a clean copy, then pip installs that sdist (it builds a wheel from it):
    the sdist carries what setup.py reads at build time (MANIFEST.in), and the installed package
    carries every config, the tools and the model index under repre_mm/.mim."""
    src = _clean_copy(tmp_path / 'src')
    proc = subprocess.run([PY, 'setup.py', '-q', 'sdist', '-d', str(tmp_path / 'dist')],
                          cwd=str(src), capture_output=True, text=True, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    (sdist, ) = os.listdir(tmp_path / 'dist')
    with tarfile.open(tmp_path / 'dist' / sdist) as tar:
        names = {n.partition('/')[2] for n in tar.getnames()}
    for name in ('setup.py', 'README.md', 'model-index.yml', 'requirements/runtime.txt',
                 'requirements/mminstall.txt', 'requirements/downstream.txt',
                 'requirements/tests.txt', f'configs/{SMALL}', 'tools/train.py'):
        assert name in names, name
    assert not any('__pycache__' in n or n.endswith('.pyc') for n in names)

    target = tmp_path / 'site'
    proc = subprocess.run([PY, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                           '--target', str(target), str(tmp_path / 'dist' / sdist)],
                          cwd=str(tmp_path), capture_output=True, text=True, env=_clean_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    mim = target / 'repre_mm' / '.mim'
    assert _files_under(mim / 'configs') == _files_under(src / 'configs')
    assert _files_under(mim / 'tools') == _files_under(src / 'tools')
    assert (mim / 'model-index.yml').read_text() == (src / 'model-index.yml').read_text()
    assert (target / 'repre_mm' / 'data' / 'fashion_mnist_subset.npz').is_file()
    # install_requires came from requirements/runtime.txt
    (info, ) = [d for d in os.listdir(target) if d.endswith('.dist-info')]
    requires = [line.split(':', 1)[1].strip() for line in
                (target / info / 'METADATA').read_text().splitlines()
                if line.startswith('Requires-Dist:') and 'extra ==' not in line]
    runtime = [line.strip() for line in (src / 'requirements' / 'runtime.txt').read_text()
               .splitlines() if line.strip() and not line.startswith('#')]
    assert len(requires) == len(runtime) > 0


def test_the_repre_mm_scope_under_pip_install_editable(tmp_path):
    """`pip install -e` of a clean copy into a venv of its own; then a user's config in another
    folder inherits `repre_mm::` configs, and they are the copy's live files: an edit made
    after the install shows."""
    src = _clean_copy(tmp_path / 'src')
    venv = tmp_path / 'venv'
    subprocess.run([PY, '-m', 'venv', '--without-pip', str(venv)], check=True)
    vpy = str(venv / 'bin' / 'python')
    purelib = subprocess.run([vpy, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The stack (torch, mmengine, mmpretrain, pip, setuptools) is this interpreter's: its folders
    # as plain path lines, after the venv's own site-packages. A plain line runs no .pth file of
    # this environment, so an editable install of this checkout there stays out of it.
    root = osp.abspath(ROOT)
    stack = [p for p in sys.path if p and osp.isdir(p)
             and osp.commonpath([osp.abspath(p), root]) != root]
    with open(osp.join(purelib, '_stack.pth'), 'w') as f:
        f.write('\n'.join(stack) + '\n')
    proc = subprocess.run([vpy, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation',
                           '--use-pep517', '--ignore-installed', '-e', str(src)],
                          cwd=str(tmp_path), capture_output=True, text=True, env=_clean_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(src / 'configs' / SMALL, 'a') as f:  # an edit after the install
        f.write("\nedited_after_install = 'yes'\n")

    user = tmp_path / 'user'
    user.mkdir()
    (user / 'my_repre.py').write_text(f"_base_ = 'repre_mm::{SMALL}'\n"
                                      "model = dict(rec_head=dict(loss_weight=0.5))\n")
    ablation = ('repre/ablations/'
                'repre_mocov3_vit-small-p16_levels-last_16xb256-amp-coslr-300e_in1k.py')
    (user / 'my_ablation.py').write_text(f"_base_ = 'repre_mm::{ablation}'\n")
    code = ('import repre_mm, mmengine.config as c; print(repre_mm.__file__)\n'
            "for name in ('my_repre.py', 'my_ablation.py'):\n"
            '    cfg = c.Config.fromfile(name)\n'
            '    print(cfg.model.type, cfg.model.levels, cfg.model.rec_head.loss_weight, '
            'cfg.edited_after_install)\n')
    proc = subprocess.run([vpy, '-c', code], cwd=str(user), capture_output=True, text=True,
                          env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    where, mine, theirs = proc.stdout.strip().splitlines()[-3:]
    assert where == str(src / 'repre_mm' / '__init__.py')  # the copy, not this checkout
    assert mine == 'RePre (2, 5, 8, 11) 0.5 yes'
    assert theirs == 'RePre (11,) 1.0 yes'


@pytest.fixture(scope='module')
def wheel_venv(installed):
    """A virtual environment with the wheel installed (--no-deps) that sees this environment's
    packages (the stack) behind its own site-packages, as a user's environment has them. This
    checkout is not on its path: no PYTHONPATH, and this environment's editable install of
    repre-mm is invisible there (the .pth files of a folder named in a .pth are not read)."""
    import sysconfig
    venv = installed['base'] / 'venv'
    subprocess.run([PY, '-m', 'venv', str(venv)], check=True, timeout=300)
    python = str(venv / 'bin' / 'python')
    site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
                           '["purelib"])'], capture_output=True, text=True,
                          check=True).stdout.strip()
    # the wheel first, without PYTHONPATH: with this checkout or the stack visible, pip would
    # take this environment's editable repre-mm for an installed one and install nothing
    proc = subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', installed['wheel']],
                          capture_output=True, text=True, timeout=300, env=_clean_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(osp.join(site, 'stack.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    where = subprocess.run([python, '-c', 'import repre_mm.utils.resources as r; '
                            'print(r.import_root()); print(r.package_root())'],
                           cwd=str(installed['base']), capture_output=True, text=True,
                           env=_clean_env())
    # the installed copy, and its shipped configs and tools under .mim
    assert where.stdout.split() == [site, osp.join(site, 'repre_mm', '.mim')], \
        where.stdout + where.stderr[-2000:]
    return dict(python=python, site=site)


def test_from_a_wheel_install_the_seg_benchmark_runs_to_its_report(wheel_venv, tmp_path):
    from helpers import scene_seg_folder
    data = scene_seg_folder(str(tmp_path / 'data'))
    work = tmp_path / 'elsewhere'
    work.mkdir()
    proc = subprocess.run([wheel_venv['python'], '-m', 'repre_mm.benchmarks.seg_transfer',
                           '--quick', '--data', data, '--out', 'out', '--seeds', '1'],
                          cwd=str(work), capture_output=True, text=True, timeout=900,
                          env=_clean_env())
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert (work / 'out' / 'results.md').exists()
    assert json.loads((work / 'out' / 'results.json').read_text())['paired']
    # nothing came from this checkout (not on that environment's path in the first place)
    assert ROOT not in log
    for folder, _, files in os.walk(work / 'out'):
        for name in files:
            if name.endswith(('.py', '.log', '.json', '.md')):
                assert ROOT not in open(osp.join(folder, name), errors='ignore').read(), name


def test_from_a_wheel_install_mim_train_trains(wheel_venv, tmp_path):
    from helpers import write_images
    images = write_images(str(tmp_path / 'images'), num=8, size=32)
    proc = subprocess.run(
        [wheel_venv['python'], '-m', 'mim', 'train', 'repre_mm', osp.basename(TINY), '--gpus',
         '0', '--work-dir', str(tmp_path / 'w'), '-y', '--cfg-options',
         f'train_dataloader.dataset.data_root={images}', 'train_dataloader.dataset.data_prefix=',
         'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
         'train_cfg.max_epochs=1', 'custom_hooks=[]'],
        cwd=str(tmp_path), capture_output=True, text=True, env=_clean_env(OMP_NUM_THREADS='1'),
        timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert osp.join(wheel_venv['site'], 'repre_mm', '.mim', 'tools', 'train.py') in out
    assert (tmp_path / 'w' / 'epoch_1.pth').exists()


def test_from_a_wheel_install_extract_features_takes_a_scoped_config(wheel_venv, tmp_path):
    from helpers import write_images
    images = write_images(str(tmp_path / 'images'), num=2, size=32)
    code = ('import glob, sys\n'
            'from repre_mm.apis import extract_features\n'
            f"feats = extract_features('repre_mm::{TINY[len('configs/'):]}', None, "
            'sorted(glob.glob(sys.argv[1] + "/*.jpg")))\n'
            "print(tuple(feats['cls'].shape), tuple(feats['patch'].shape))")
    proc = subprocess.run([wheel_venv['python'], '-c', code, images], cwd=str(tmp_path),
                          capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls, patch = proc.stdout.strip().splitlines()[-1].split(') (')
    assert cls.startswith('(2, ') and patch.startswith('2, ')
