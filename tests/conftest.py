import os

import repre_mm  # noqa: F401,I001  (first: compat patches before torchvision)
import pytest
import torch
from mmengine.logging import MessageHub

# tools/run_tests.sh shares the cores among its pytest-xdist workers through OMP_NUM_THREADS.
torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS') or max(1, min(2, os.cpu_count() or 1))))


@pytest.fixture(autouse=True)
def _message_hub():
    # MoCo v3's CosineEMA reads max_iters from the MessageHub; a Runner sets it, a bare test must.
    hub = MessageHub.get_current_instance()
    hub.update_info('iter', 0)
    hub.update_info('max_iters', 100)
    yield
