"""Each patch of repre_mm.compat, shown failing without the patch and working with it, and each
patch shown doing nothing where the library is already right. A test that needs a patch to be
applied skips, naming why, where the running environment does not have its failure (a CUDA
machine, numpy 1, a fixed library): tests/test_guest.py runs this file so on this machine."""
import io
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from repre_mm import compat

ROOT = os.path.dirname(os.path.dirname(__file__))


def _python(code, **env):
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT, **env), capture_output=True,
                          text=True, timeout=120)


def _replaced(key):
    """What a patch replaced; skips where that patch did not apply here."""
    if key not in compat.ORIGINALS:
        pytest.skip(f'{key} is not patched here: its failure does not exist in this environment')
    return compat.ORIGINALS[key]


@pytest.fixture
def unapplied():
    """The patches' state as before any was applied; restored afterwards. Tests that apply a
    patch again restore what it replaces themselves (monkeypatch)."""
    from repre_mm.compat import _state
    applied, originals = set(_state.APPLIED), dict(_state.ORIGINALS)
    _state.APPLIED.clear()
    yield _state
    _state.APPLIED.clear()
    _state.APPLIED.update(applied)
    _state.ORIGINALS.clear()
    _state.ORIGINALS.update(originals)


def test_torchvision_imports_only_with_the_schema_patch():
    probe = _python('from repre_mm.compat.torchvision import '
                    '_torchvision_cuda_build_on_cpu_torch as f; print(f())')
    if probe.stdout.strip() != 'True':
        pytest.skip('torchvision matches torch here (a GPU install): the patch is not applied')
    bare = _python('import torchvision')
    assert bare.returncode != 0 and 'torchvision::nms' in bare.stderr
    patched = _python('''
        import repre_mm.compat
        import torchvision.transforms, torchvision.ops.boxes
        import mmpretrain.models, mmdet.models, mmseg.models
        print('ok')''')
    assert patched.returncode == 0, patched.stderr[-2000:]


def test_torchvision_patch_does_nothing_where_torchvision_matches_torch(unapplied, monkeypatch):
    from repre_mm.compat import torchvision as tv_compat
    defined = []

    class Library:  # records what the patch would declare
        def __init__(self, *args):
            pass

        def define(self, schema):
            defined.append(schema)

    monkeypatch.setattr(torch.library, 'Library', Library)
    monkeypatch.setattr(tv_compat, '_LIBRARIES', [])
    monkeypatch.delitem(sys.modules, 'torchvision')  # as before torchvision's first import
    # a CPU torchvision beside a CPU torch, a CUDA one beside a CUDA torch, none at all
    for cuda, version in ((None, '0.28.0+cpu'), ('12.8', '0.28.0+cu128'), (None, None)):
        monkeypatch.setattr(torch.version, 'cuda', cuda)
        monkeypatch.setattr(tv_compat, '_torchvision_version_on_disk', lambda: version)
        assert not tv_compat.patch_torchvision_ops_schemas()
    assert defined == [] and tv_compat._LIBRARIES == [] and not unapplied.APPLIED
    # the mismatch itself is patched (the test tells the two apart)
    monkeypatch.setattr(torch.version, 'cuda', None)
    monkeypatch.setattr(tv_compat, '_torchvision_version_on_disk', lambda: '0.28.0+cu128')
    assert tv_compat.patch_torchvision_ops_schemas() and len(defined) == 2


def test_pytorch_launcher_without_cuda_only_with_the_patch():
    if torch.cuda.is_available():
        pytest.skip('CUDA present: mmengine initialises NCCL itself')
    env = dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(20000 + os.getpid() % 10000))
    code = '''
        {}
        from mmengine.dist import init_dist, get_world_size
        init_dist('pytorch', backend='gloo')
        print('world', get_world_size())'''
    bare = _python(code.format(''), **env)
    assert bare.returncode != 0 and 'cuda' in bare.stderr.lower()
    patched = _python(code.format('import repre_mm.compat'), **env)
    assert patched.returncode == 0 and 'world 1' in patched.stdout, patched.stderr[-2000:]


def test_cpu_distributed_patch_does_nothing_where_cuda_is_available(unapplied, monkeypatch):
    import mmengine.dist.utils as dist_utils
    from mmengine.config import Config
    original = unapplied.ORIGINALS.get('_init_dist_pytorch', dist_utils._init_dist_pytorch)
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch', original)  # mmengine's own
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert not compat.patch_cpu_distributed_init()
    assert dist_utils._init_dist_pytorch is original and not unapplied.APPLIED
    cfg = Config(dict(launcher='pytorch'))
    compat.cpu_model_wrapper_cfg(cfg)
    assert 'model_wrapper_cfg' not in cfg  # mmengine's own DDP wrapper
    # without CUDA both apply (the test tells the two apart)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert compat.patch_cpu_distributed_init() and dist_utils._init_dist_pytorch is not original
    compat.cpu_model_wrapper_cfg(cfg)
    assert cfg.model_wrapper_cfg.type == 'CPUDistributedDataParallel'


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_adjust_hue_under_numpy2(backend):
    import mmcv
    original = _replaced('adjust_hue')
    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(OverflowError):
        original(img, -0.1, backend=backend)
    # positive shifts: identical to mmcv's own function
    assert np.array_equal(mmcv.adjust_hue(img, 0.1, backend=backend),
                          original(img, 0.1, backend=backend))
    # negative shifts: the hue moves back by |factor| of the circle, as numpy 1 computed it
    import cv2
    out = mmcv.adjust_hue(img, -0.1, backend=backend)
    h_in = cv2.cvtColor(img, cv2.COLOR_BGR2HSV_FULL)[..., 0].astype(int)
    h_out = cv2.cvtColor(out, cv2.COLOR_BGR2HSV_FULL)[..., 0].astype(int)
    shift = np.median((h_out - h_in) % 256)
    assert abs(shift - (256 - 25)) <= 3


def test_adjust_hue_patch_applies_only_where_mmcv_fails(unapplied, monkeypatch):
    import mmcv
    import mmcv.image
    import mmcv.image.photometric
    from repre_mm.compat.mmcv import _adjust_hue, _adjust_hue_fails
    modules = (mmcv, mmcv.image, mmcv.image.photometric)
    own = unapplied.ORIGINALS.get('adjust_hue', mmcv.image.photometric.adjust_hue)

    def install(function):
        for module in modules:
            monkeypatch.setattr(module, 'adjust_hue', function)

    install(own)  # mmcv's own: patched exactly where it fails (numpy >= 2), left alone elsewhere
    fails = _adjust_hue_fails(own)
    assert fails == (int(np.__version__.split('.')[0]) >= 2)
    assert compat.patch_mmcv_adjust_hue() == fails
    assert all((m.adjust_hue is _adjust_hue) == fails for m in modules)
    unapplied.APPLIED.clear()

    def fixed(img, hue_factor, backend=None):  # numpy 1, or a fixed mmcv: never replaced
        return img

    install(fixed)
    assert not compat.patch_mmcv_adjust_hue() and not unapplied.APPLIED
    assert all(m.adjust_hue is fixed for m in modules)

    def failing(img, hue_factor, backend=None):  # the test tells the two apart
        raise OverflowError('Python integer -25 out of bounds for uint8')

    install(failing)
    assert compat.patch_mmcv_adjust_hue()
    assert all(m.adjust_hue is _adjust_hue for m in modules)


def test_collate_fn_inherited_from_another_package():
    from mmengine.runner import Runner
    loader = dict(batch_size=2, dataset=[torch.zeros(3)] * 4, sampler=dict(
        type='DefaultSampler', shuffle=False), collate_fn=dict(
            type='default_collate', _scope_='mmpretrain'))
    with pytest.raises(TypeError, match='_scope_'):
        next(iter(_replaced('build_dataloader')(dict(loader))))
    batch = next(iter(Runner.build_dataloader(dict(loader))))
    assert batch.shape == (2, 3)


def test_collate_scope_patch_does_nothing_where_mmengine_accepts_the_scope(
        unapplied, monkeypatch):
    from mmengine.runner import Runner
    own = unapplied.ORIGINALS.get('build_dataloader', Runner.build_dataloader)
    monkeypatch.setattr(Runner, 'build_dataloader', staticmethod(own))
    seen = []

    def accepting(dataloader, *args, **kwargs):  # a fixed mmengine
        seen.append(dataloader['collate_fn'])
        return [0]

    monkeypatch.setattr(Runner, 'build_dataloader', staticmethod(accepting))
    assert not compat.patch_collate_fn_scope() and not unapplied.APPLIED
    assert Runner.build_dataloader is accepting and seen[0]['_scope_'] == 'mmengine'
    monkeypatch.setattr(Runner, 'build_dataloader', staticmethod(own))
    assert compat.patch_collate_fn_scope()  # mmengine 0.10.7's own fails: the test tells


def test_mmengine_checkpoint_state_loads_with_weights_only():
    from mmengine.logging import HistoryBuffer, MessageHub
    hub = MessageHub('compat-test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(0.5))
    state = dict(message_hub=hub.state_dict(), meta=dict(epoch=1))

    def save(getstate):
        HistoryBuffer.__getstate__ = getstate
        try:
            buf = io.BytesIO()
            torch.save(state, buf)
            return buf.getvalue()
        finally:
            HistoryBuffer.__getstate__ = compat._history_buffer_getstate

    unpatched = save(_replaced('HistoryBuffer.__getstate__'))
    with pytest.raises(Exception, match='getattr'), compat.mmengine_checkpoint_loading():
        torch.load(io.BytesIO(unpatched), weights_only=True)
    with compat.mmengine_checkpoint_loading():
        loaded = torch.load(io.BytesIO(save(compat._history_buffer_getstate)), weights_only=True)
    restored = loaded['message_hub']['log_scalars']['train/loss']
    assert restored.mean() == 1.0 and restored.current() == 0.5
    assert restored.statistics('max') == 1.5  # built-in statistics restored on load
    # only the checkpoint loads admit HistoryBuffer and numpy: any other torch.load refuses it
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(io.BytesIO(save(compat._history_buffer_getstate)), weights_only=True)


def test_safe_load_patch_applies_only_where_torch_refuses_the_message_hub(
        unapplied, monkeypatch):
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner import Runner

    from repre_mm.compat.mmengine import _history_buffer_load_fails
    getstate = unapplied.ORIGINALS.get('HistoryBuffer.__getstate__', HistoryBuffer.__getstate__)
    load = unapplied.ORIGINALS.get('Runner.load_checkpoint', Runner.load_checkpoint)
    monkeypatch.setattr(HistoryBuffer, '__getstate__', getstate)  # mmengine's own
    monkeypatch.setattr(Runner, 'load_checkpoint', load)
    fails = _history_buffer_load_fails()
    # where torch loads it (torch < 2.6, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1): mmengine alone
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    assert not _history_buffer_load_fails()
    assert not compat.patch_checkpoint_safe_load()
    assert HistoryBuffer.__getstate__ is getstate and Runner.load_checkpoint is load
    assert not unapplied.APPLIED
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    if not fails:
        pytest.skip('torch loads a pickled HistoryBuffer here: the patch never applies')
    safe_globals = torch.serialization.safe_globals
    monkeypatch.delattr(torch.serialization, 'safe_globals')  # no scoped allow-list to fix with
    assert not compat.patch_checkpoint_safe_load() and not unapplied.APPLIED
    monkeypatch.setattr(torch.serialization, 'safe_globals', safe_globals, raising=False)
    assert compat.patch_checkpoint_safe_load()  # the test tells the two apart
    assert HistoryBuffer.__getstate__ is not getstate and Runner.load_checkpoint is not load


def test_runner_checkpoint_loads_admit_the_message_hub_and_nothing_else(tmp_path):
    from mmengine.logging import MessageHub
    from mmengine.runner import Runner
    assert Runner.load_checkpoint is not _replaced('Runner.load_checkpoint')
    hub = MessageHub('compat-test-2')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('eta', np.float64(3.0))
    good = dict(meta=dict(epoch=1), state_dict={'w': torch.ones(1)}, message_hub=hub.state_dict())
    path = str(tmp_path / 'epoch_1.pth')
    torch.save(good, path)
    # exactly what mmengine's checkpoints hold: the list is sufficient, and refused elsewhere
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    allowed = {f'{g.__module__}.{g.__qualname__}' for g in compat.mmengine_checkpoint_globals()}
    assert unsafe and unsafe <= allowed
    with pytest.raises(Exception, match='Unsupported global'):
        torch.load(path, weights_only=True)
    from mmengine.runner.checkpoint import _load_checkpoint  # what Runner.load_checkpoint calls
    with compat.mmengine_checkpoint_loading():
        assert _load_checkpoint(path, 'cpu')['message_hub']['runtime_info']['eta'] == 3.0
    # our weight loading admits the same, and refuses the same
    from repre_mm.utils.checkpoint import load_weights
    torch.save(good, path)
    assert set(load_weights(path)) == {'w'}
    for evil in (io.StringIO, print, np.dtypes.ObjectDType):  # code, builtins, other dtypes
        torch.save(dict(good, extra=evil), path)
        with pytest.raises(Exception, match='Unsupported global'):
            load_weights(path)
        with pytest.raises(Exception, match='Unsupported global'), \
                compat.mmengine_checkpoint_loading():
            _load_checkpoint(path, 'cpu')


def test_unknown_pickled_objects_are_still_refused():
    buf = io.BytesIO()
    torch.save({'x': io.StringIO}, buf)
    with pytest.raises(Exception, match='Unsupported global'), \
            compat.mmengine_checkpoint_loading():
        torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def test_editable_scope_patch_applies_only_where_mmengine_misses_the_configs(
        tmp_path, unapplied, monkeypatch):
    """``repre_mm::`` under ``pip install -e``: mmengine looks beside the .dist-info and finds no
    .mim folder; the patch then resolves the scope to the imported package. Where mmengine
    finds .mim (a wheel install), nothing is patched."""
    import mmengine.config.config as mmengine_config

    import repre_mm
    lookup = mmengine_config.get_installed_path
    monkeypatch.setattr(mmengine_config, 'get_installed_path', lookup)
    wheel = tmp_path / 'site-packages' / 'repre_mm'
    (wheel / '.mim').mkdir(parents=True)
    # what import repre_mm replaced in this checkout (a clone not installed: this very patch)
    originals = dict(unapplied.ORIGINALS)
    assert not compat.patch_editable_package_scope(lambda package: str(wheel))
    assert not unapplied.APPLIED and unapplied.ORIGINALS == originals
    assert mmengine_config.get_installed_path is lookup

    def editable(package):  # only the .dist-info is in site-packages
        return str(tmp_path / 'site-packages' / 'missing')

    monkeypatch.setattr(mmengine_config, 'get_installed_path', editable)
    assert compat.patch_editable_package_scope(editable)
    assert mmengine_config.get_installed_path('repre-mm') == compat._package_folder()
    assert compat._package_folder() == os.path.dirname(repre_mm.__file__)
    assert mmengine_config.get_installed_path('mmpretrain') == editable('mmpretrain')
