"""repre-mm: RePre (reconstructive pre-training) for self-supervised ViTs on OpenMMLab."""
import os
import os.path as osp
import shutil
import sys

from setuptools import find_packages, setup

MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_requirements(name):
    path = osp.join(osp.dirname(__file__), 'requirements', name)
    with open(path) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith('#')]


def read_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'repre_mm', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def add_mim_extension():
    """Put configs, tools and model-index.yml under repre_mm/.mim, where OpenMMLab's tools look
    (mmpretrain's setup.py does the same): `repre_mm::` config scopes and `mim train repre_mm`
    then work after `pip install`. Copies for a wheel or sdist; symlinks for an editable
    install, so edits to configs/ show at once."""
    if any(cmd in sys.argv for cmd in ('develop', 'editable_wheel')):
        mode = 'symlink'
    elif any(cmd in sys.argv for cmd in ('sdist', 'bdist_wheel', 'build', 'build_py')):
        mode = 'copy'
    else:
        return
    root = osp.dirname(osp.abspath(__file__))
    mim_dir = osp.join(root, 'repre_mm', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src, dst = osp.join(root, name), osp.join(mim_dir, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


add_mim_extension()
setup(
    name='repre-mm',
    version=read_version(),
    description='RePre: reconstructive pre-training for contrastive ViTs, '
                'as an OpenMMLab (mmpretrain) plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['repre_mm', 'repre_mm.*']),
    package_data={'repre_mm': ['data/*.npz', 'data/*LICENSE', '.mim/model-index.yml',
                               '.mim/configs/**/*', '.mim/tools/**/*']},
    python_requires='>=3.8',
    # torch and mmcv are not pinned here: users keep the CUDA builds they have
    # (see README, "Install").
    install_requires=read_requirements('runtime.txt'),
    extras_require=dict(
        mmcv=read_requirements('mminstall.txt'),
        downstream=read_requirements('downstream.txt'),
        tests=read_requirements('tests.txt'),
    ),
    license='Apache License 2.0',
    zip_safe=False,
)
