"""Logging for scripts that build models outside an mmengine Runner."""
from mmengine.logging import MMLogger


def quiet_mmengine(level: str = 'WARNING') -> MMLogger:
    """Make a quiet logger mmengine's current one: outside a Runner, ``init_weights`` would
    print one paragraph per parameter to the console."""
    return MMLogger.get_instance('repre_mm_script', log_level=level)
