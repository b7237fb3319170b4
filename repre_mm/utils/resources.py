"""Where the configs and tools that ship with repre-mm are, as mim finds them.

A wheel (or sdist) install copies ``configs/``, ``tools/`` and ``model-index.yml`` into
``repre_mm/.mim/`` (``setup.py``), an editable install links them there, and a source checkout
used through ``PYTHONPATH`` has them beside the package. :func:`package_root` answers the way mim
does for ``mim train repre_mm``: ``repre_mm/.mim`` first, else the folder above the package.
Everything that runs a shipped tool or reads a shipped config goes through it, so the benchmarks
work from a wheel install as from a checkout (``tests/test_packaging.py``).
"""
import os.path as osp

__all__ = ['import_root', 'package_root', 'shipped_config', 'shipped_tool']

_PACKAGE = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the imported repre_mm/


def package_root() -> str:
    """The folder that holds ``configs/`` and ``tools/``: ``repre_mm/.mim`` of an installed
    package, else the source checkout the package is in."""
    for root in (osp.join(_PACKAGE, '.mim'), osp.dirname(_PACKAGE)):
        if osp.isdir(osp.join(root, 'configs')) and osp.isdir(osp.join(root, 'tools')):
            return root
    raise FileNotFoundError(
        f'repre_mm at {_PACKAGE} has neither .mim/configs and .mim/tools (a pip install) nor '
        f'configs/ and tools/ beside it (a source checkout): reinstall it with pip install .')


def shipped_config(path: str) -> str:
    """The absolute path of a shipped config, given as ``configs/...``, as ``repre_mm::...``
    (relative to ``configs/``), or as a path that exists (returned as it is)."""
    if path.startswith('repre_mm::'):
        path = osp.join('configs', path[len('repre_mm::'):])
    elif osp.exists(path) or osp.isabs(path):
        return path
    return osp.join(package_root(), path)


def shipped_tool(*parts: str) -> str:
    """The absolute path of a shipped tool: ``shipped_tool('train.py')`` is tools/train.py."""
    return osp.join(package_root(), 'tools', *parts)


def import_root() -> str:
    """The folder the imported ``repre_mm`` package is in: put on a subprocess's PYTHONPATH,
    it makes the subprocess import this very package."""
    return osp.dirname(_PACKAGE)
