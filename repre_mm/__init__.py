"""repre-mm: RePre for OpenMMLab. Importing it registers every class into mmpretrain's
registries (and mmdet's / mmseg's where those are installed)."""
import warnings

# setuptools >= 81 warns "pkg_resources is deprecated as an API" when mmengine and mmcv import it
# (to find installed packages), twice with source lines before a tool's first line, in every
# training subprocess too: nothing a user of this plugin can act on. Only that message is
# silenced, before anything here imports mmengine.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)

from . import compat  # noqa: F401,E402,I001  (first: patches must precede torchvision's import)
from . import datasets, engine, evaluation, models  # noqa: F401,E402
from .version import __version__  # noqa: F401,E402

# mmengine resolves `pkg::path` config bases only for the packages of its MODULE2PACKAGE table;
# with ours added, `_base_ = 'repre_mm::repre/...'` finds the configs that `pip install` put
# under repre_mm/.mim/configs (once repre_mm is imported, as tools/train.py and mim do).
from mmengine.config.utils import MODULE2PACKAGE  # noqa: E402

MODULE2PACKAGE.setdefault('repre_mm', 'repre-mm')

# the downstream extra (pip install -e ".[downstream]"): registers mmdet's / mmseg's classes of
# those libraries that are installed, nothing otherwise.
from . import downstream  # noqa: F401,E402
