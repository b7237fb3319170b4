"""repre-mm: RePre for OpenMMLab. Importing it registers every class into mmpretrain's
registries (and mmdet's / mmseg's where those are installed)."""
from . import compat  # noqa: F401,I001  (first: patches must precede torchvision's import)
from . import datasets, engine, evaluation, models  # noqa: F401
from .version import __version__  # noqa: F401

try:  # the downstream extra: mmdet (pip install -e ".[downstream]")
    import mmdet  # noqa: F401
except ImportError:
    pass
else:
    from . import downstream  # noqa: F401
