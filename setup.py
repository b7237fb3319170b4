"""repre-mm: RePre (reconstructive pre-training) for self-supervised ViTs on OpenMMLab."""
import os.path as osp

from setuptools import find_packages, setup


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


setup(
    name='repre-mm',
    version=read_version(),
    description='RePre: reconstructive pre-training for contrastive ViTs, '
                'as an OpenMMLab (mmpretrain) plugin',
    long_description=open('README.md').read() if osp.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['repre_mm', 'repre_mm.*']),
    package_data={'repre_mm': ['data/*.npz', 'data/*LICENSE']},
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
