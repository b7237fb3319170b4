"""torchvision: PyPI's CUDA build beside a CPU torch.

(This module is ``repre_mm.compat.torchvision``; it never imports torchvision, whose import is
what fails. Imports here are absolute.)
"""
import importlib.util
import re
import sys
from pathlib import Path

import torch

from repre_mm.compat._state import APPLIED

# torch.library.Library objects: a definition lives only as long as its Library object.
_LIBRARIES = []


def _torchvision_version_on_disk():
    """torchvision's ``__version__`` as its ``version.py`` says, or None. Read, not imported:
    importing ``torchvision.version`` imports torchvision, which is what fails."""
    spec = importlib.util.find_spec('torchvision')
    if spec is None or not spec.submodule_search_locations:
        return None
    version_file = Path(list(spec.submodule_search_locations)[0]) / 'version.py'
    if not version_file.exists():
        return None
    match = re.search(r"__version__ = '([^']+)'", version_file.read_text())
    return match.group(1) if match else None


def _torchvision_cuda_build_on_cpu_torch() -> bool:
    """True when torchvision's compiled ops were built for CUDA but torch has none."""
    if torch.version.cuda is not None:
        return False
    version = _torchvision_version_on_disk()
    return version is not None and '+cu' in version


def patch_torchvision_ops_schemas() -> bool:
    """PyPI's torchvision 0.28 for Linux is a CUDA build; its ``_C.so`` links libtorch_cuda, so
    beside the CPU torch no operator registers and ``import torchvision`` dies in
    ``_meta_registrations.py`` (``operator torchvision::nms does not exist``). mmpretrain imports
    torchvision at module level, mmengine's Runner start-up too. Declaring the two schemas that
    file registers fakes for lets the pure-Python parts (transforms, ops.boxes) import;
    ``torchvision.ops.nms`` itself still raises (mmdet uses mmcv's compiled nms instead).

    Applies only where torch has no CUDA and torchvision's version carries ``+cu``, before
    torchvision is imported. Measured on torch 2.13.0+cpu with torchvision 0.28.0 (PyPI, a
    CUDA build); a CPU torchvision (``+cpu``) or a CUDA torch is left alone
    (``tests/test_compat.py``)."""
    if ('torchvision_schemas' in APPLIED or 'torchvision' in sys.modules
            or not _torchvision_cuda_build_on_cpu_torch()):
        return False
    lib = torch.library.Library('torchvision', 'DEF')  # noqa: TOR901
    lib.define('nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    lib.define('qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor')
    _LIBRARIES.append(lib)
    APPLIED.add('torchvision_schemas')
    return True
