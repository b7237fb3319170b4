"""tools/benchmarks/seg_transfer.py: pre-training on a segmentation dataset's own images, the
frozen probe, fine-tuning through mmseg, the report; on generated datasets in mmseg's layout
(colour images of several sizes and orientations, 4 classes, 255 pixels)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from helpers import lr_by_iteration, run_transfer_benchmark, scene_seg_folder

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VERDICTS = {'better', 'worse', 'no measurable difference'}
METRICS = ('probe_miou', 'probe_miou_mid', 'finetune_miou')


def run_benchmark(out, data, *extra, timeout=900):
    return run_transfer_benchmark('seg_transfer', out, data, *extra, timeout=timeout)


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    """The quick benchmark on a 4-class dataset, run once for the tests of this module."""
    tmp = tmp_path_factory.mktemp('seg')
    data = scene_seg_folder(str(tmp / 'data'))
    out = str(tmp / 'out')
    summary, stdout = run_benchmark(out, data)
    return data, out, summary, stdout


def test_quick_benchmark_end_to_end(quick_run):
    data, out, summary, stdout = quick_run
    methods = ['baseline', 'repre', 'baseline_equal_compute', 'untrained']
    assert summary['classes'] == [f'class{c}' for c in range(4)]
    assert {(r['method'], r['seed']) for r in summary['results']} == {
        (m, s) for m in methods for s in range(2)}
    for r in summary['results']:
        for key in METRICS:
            assert 0 <= r[key] <= 100, (key, r)
        assert set(r['finetune_per_class']) == set(summary['classes'])
        assert set(r['probe_per_class']) == set(summary['classes'])
    assert 0 < summary['raw_pixels']['probe_miou'] <= 100
    paired = summary['paired']
    # the positive controls come first, then RePre against both baselines
    assert list(paired)[:2] == ['baseline - untrained', 'baseline_equal_compute - untrained']
    assert {'repre - baseline', 'repre - baseline (equal compute)'} <= set(paired)
    for diff in paired.values():
        for key in METRICS:
            d = diff[key]
            assert len(d['per_seed']) == 2
            if d['ci'] is None:  # every seed differed by the same amount
                assert len(set(d['per_seed'])) == 1 and d['verdict'].startswith('no spread')
                continue
            low, high = d['ci']
            assert low <= d['mean'] <= high
            assert d['verdict'] == ('better' if low > 0 else 'worse' if high < 0 else
                                    'no measurable difference')
    report = open(osp.join(out, 'results.md')).read()
    assert '| repre - baseline | fine-tuned mIoU |' in report
    assert 'Per-class IoU, fine-tuned' in report and 'class3' in report
    assert osp.getsize(summary['picture']) > 1000
    assert set(summary['timing_s']) == {'pre-training', 'probe', 'fine-tuning', 'total'}
    # the equal-compute baseline trained the counted iterations
    assert summary['equal_compute']['iters'] >= 1


def test_derived_config_loads_the_backbone_strictly_through_the_transfer_driver(quick_run):
    """What a user runs is what is measured: each fine-tuning ran transfer.sh, whose export and
    tools/train.py loaded every backbone weight strictly, then tools/test.py scored it."""
    from mmengine.config import Config
    _, out, _, _ = quick_run
    log = open(osp.join(out, 'finetune', 'repre_seed0.log')).read()
    assert 'backbone.pth' in log and '(strict)' in log
    scratch = open(osp.join(out, 'finetune', 'untrained_seed0.log')).read()
    # from scratch: the backbone's initial weights, written and loaded like an export
    assert 'wrote the initial backbone' in scratch and 'untrained_seed0/backbone.pth (strict)' \
        in scratch
    cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', 'repre_seed0.py'))
    assert cfg.model.backbone.type == 'mmpretrain.MoCoV3ViT'
    assert cfg.model.backbone.init_cfg.strict is True
    assert cfg.model.decode_head.num_classes == 4
    assert cfg.test_evaluator.type == 'PerClassIoUMetric'
    metrics = json.load(open(osp.join(out, 'finetune', 'repre_seed0', 'metrics.json')))
    assert {'mIoU', 'aAcc', 'IoU.class0', 'IoU.class3'} <= set(metrics)


def test_from_scratch_trains_the_same_parameters_as_a_pretrained_run(quick_run):
    """The from-scratch reference is the same module with the same trainable parameters (names
    and shapes, pos_embed included) as a pre-trained run; only its initial weights differ."""
    from helpers import trainable_parameters
    _, out, _, _ = quick_run
    configs = osp.join(out, 'finetune', 'configs')
    trained = trainable_parameters(osp.join(configs, 'baseline_seed0.py'), 'mmseg')
    assert 'backbone.pos_embed' in trained
    assert trainable_parameters(osp.join(configs, 'untrained_seed0.py'), 'mmseg') == trained


def test_written_finetune_config_trains_and_tests_with_the_tools(quick_run, tmp_path):
    """The derived config is an ordinary mmseg config: tools/train.py and tools/test.py run it
    as it is, the backbone loaded strictly from the export it names."""
    _, out, _, _ = quick_run
    config = osp.join(out, 'finetune', 'configs', 'repre_seed1.py')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    work = str(tmp_path / 'work')
    train = subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', work],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert 'repre_seed1/backbone.pth (strict)' in train.stdout + train.stderr
    from mmengine.config import Config  # its checkpoints are written atomically
    assert Config.fromfile(config).default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    checkpoint = open(osp.join(work, 'last_checkpoint')).read().strip()
    metrics = str(tmp_path / 'metrics.json')
    test = subprocess.run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
                           str(tmp_path / 'test'), '--out', metrics, '--out-item', 'metrics'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stderr[-3000:]
    assert 0 <= json.load(open(metrics))['mIoU'] <= 100


def sample_paths(dataset_cfg, scope):
    """Every file a dataset config reads, built through its registry."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        registry = __import__(f'{scope}.registry', fromlist=['DATASETS']).DATASETS
        dataset = registry.build(dataset_cfg)
    paths = []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        paths += [info['img_path']] + ([info['seg_map_path']] if 'seg_map_path' in info else [])
    return paths


def test_finetune_warm_up_reaches_the_full_learning_rate(quick_run, tmp_path):
    """LinearLR ends one step after the warm-up: with end=warmup it stopped a step short (at
    the start factor, 1e-3, for a 1-step warm-up) and PolyLR decayed from there."""
    from repre_mm.benchmarks import seg_transfer
    data, out, _, _ = quick_run
    args = seg_transfer.parse_args(['--data', data, '--out', str(tmp_path), '--quick',
                                    '--finetune-iters', '20', '--finetune-lr', '0.01'])
    info = seg_transfer.prepare_data(args)
    pretrain = osp.join(out, 'pretrain', 'configs', 'baseline_seed0.py')
    config = seg_transfer.finetune_config(args, info, pretrain, 0, 'warm', None)
    lrs = lr_by_iteration(config, 20)
    assert lrs[0] == pytest.approx(1e-5)  # warm-up of max(1, 20 // 10) = 2 iterations
    assert lrs[2] == pytest.approx(0.01)  # full lr once the warm-up is over
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))  # then PolyLR only decays


def test_training_never_reads_the_test_split(quick_run):
    """Pre-training reads train + val images; fine-tuning trains on train and has no
    validation; the test split is read by tools/test.py only."""
    from mmengine.config import Config
    data, out, _, _ = quick_run
    test_files = {osp.realpath(osp.join(data, sub, 'test', f))
                  for sub in ('img_dir', 'ann_dir')
                  for f in os.listdir(osp.join(data, sub, 'test'))}
    for method in ('baseline', 'repre', 'baseline_equal_compute'):
        cfg = Config.fromfile(osp.join(out, 'pretrain', 'configs', f'{method}_seed0.py'))
        read = {osp.realpath(p) for p in sample_paths(cfg.train_dataloader.dataset,
                                                      'mmpretrain')}
        assert len(read) == 16 + 4 and not read & test_files
        # pre-training reads copies (downscaled when large) of the train and val images only
        assert all(osp.basename(p).startswith(('train', 'val')) for p in read), read
        cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', f'{method}_seed0.py'))
        read = {osp.realpath(p) for p in sample_paths(cfg.train_dataloader.dataset, 'mmseg')}
        assert len(read) == 2 * 16 and not read & test_files
        assert cfg.val_dataloader is None and cfg.val_cfg is None
        assert cfg.test_dataloader.dataset.split == 'test'


def test_restart_reuses_every_run_and_score(quick_run):
    data, out, summary, _ = quick_run
    again, stdout = run_benchmark(out, data)
    assert '[run] started' not in stdout
    assert stdout.count('[run] reusing') == 6 + 8  # pre-training, fine-tuning
    # probes; references: the untrained encoder of each seed, raw pixels
    assert stdout.count('[eval] reusing the stored scores') == 6 + 2 + 1
    assert again['results'] == summary['results']


def test_first_seed_reports_the_fresh_seeds_only(quick_run):
    """--first-seed: a variant chosen on some seeds is confirmed on the others, and the report
    pairs those alone. Here seed 1 of the quick run, whose finished runs are reused (in its
    folder: a run's config names the folder's own copies of the images)."""
    data, out, summary, _ = quick_run
    again, stdout = run_benchmark(out, data, '--first-seed', '1', '--seeds', '1',
                                  '--methods', 'baseline', 'repre')
    assert '[run] started' not in stdout
    assert stdout.count('[run] reusing') == 2 + 3  # pre-training; fine-tuning with scratch
    # the probes and the references (untrained seed 1, raw pixels) too: nothing is recomputed
    assert stdout.count('[eval] reusing the stored scores') == 2 + 2
    assert {(r['method'], r['seed']) for r in again['results']} == {
        (m, 1) for m in ('baseline', 'repre', 'untrained')}
    before = {(r['method'], r['seed']): r for r in summary['results']}
    for r in again['results']:
        for key in METRICS:  # the untrained reference is drawn with seed 1 too
            assert r[key] == pytest.approx(before[(r['method'], 1)][key], abs=1e-6), r
    assert again['paired']['repre - baseline']['finetune_miou']['per_seed'] == [
        pytest.approx(before[('repre', 1)]['finetune_miou'] -
                      before[('baseline', 1)]['finetune_miou'])]
    assert again['picture'] and osp.isfile(again['picture'])
    # the report of seeds 0.. stays: the fresh seeds' one has its own name
    assert again['picture'].endswith('predictions_from_seed1.png')
    with open(osp.join(out, 'results.json')) as f:
        assert {(r['method'], r['seed']) for r in json.load(f)['results']} == {
            (r['method'], r['seed']) for r in summary['results']}


def test_given_checkpoints_are_scored_like_the_benchmarks_own(quick_run, tmp_path):
    """--checkpoints: checkpoints written elsewhere (here: by the quick run) are probed as the
    benchmark probes its own runs, with the config mmengine stored in them."""
    data, out, summary, _ = quick_run
    from repre_mm.benchmarks.runs import checkpoint_of
    given = [f'{m}={checkpoint_of(osp.join(out, "pretrain", f"{m}_seed{s}"))}'
             for m in ('baseline', 'repre') for s in range(2)]
    other, _ = run_benchmark(str(tmp_path / 'given'), data, '--checkpoints', *given,
                             '--no-finetune')
    own = {(r['method'], r['seed']): r for r in summary['results']}
    for r in other['results']:
        mine = own[(r['method'], r['seed'])]
        for key in ('probe_miou', 'probe_miou_mid'):
            assert r[key] == pytest.approx(mine[key], abs=1e-6), (r['method'], key)
    assert 'repre - baseline' in other['paired']


def test_bad_checkpoint_argument_is_a_clear_error(tmp_path):
    data = scene_seg_folder(str(tmp_path / 'data'), counts=(('train', 4), ('test', 2)))
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/seg_transfer.py', '--data', data, '--checkpoints',
         'baseline:a.pth'], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'METHOD=PATH' in proc.stderr


def test_encoders_of_different_normalisations_are_refused_by_the_probe(tmp_path):
    """With checkpoints of different pre-training configs the probe would read every image
    with the first config's patch size and mean / std: refused, each config named."""
    from repre_mm.benchmarks.pretrain import ViewSpec, dump_config, pretrain_config
    from repre_mm.benchmarks.seg_transfer import probe_inputs
    configs = []
    for name, mean in (('a', 110.0), ('b', 120.0)):
        spec = ViewSpec(img_size=32, patch=8, mean=[mean] * 3, std=[40.0] * 3)
        configs.append(dump_config(pretrain_config('mocov3', 'baseline', 0, 1, 8, spec),
                                   str(tmp_path / f'{name}.py')))
    same = {'baseline': [(configs[0], None)], 'repre': [(configs[0], None)]}
    assert probe_inputs(same) == (8, dict(mean=[110.0] * 3, std=[40.0] * 3))
    with pytest.raises(SystemExit, match='different patch sizes or image normalisations') as e:
        probe_inputs({'baseline': [(configs[0], None)], 'repre': [(configs[1], None)]})
    assert configs[0] in str(e.value) and configs[1] in str(e.value)


def test_select_chooses_on_validation_and_the_test_runs_use_the_choice(quick_run, tmp_path):
    """--val-fraction carves train images into <out>/splits/val.txt (the probe and fine-tuning
    train on the rest), --select fine-tunes the first seed's baseline once per candidate,
    scored on those images (never on test), and every run scored on test uses the winner."""
    from mmengine.config import Config
    from repre_mm.benchmarks.runs import checkpoint_of
    data, quick_out, _, _ = quick_run
    given = [f'baseline={checkpoint_of(osp.join(quick_out, "pretrain", f"baseline_seed{s}"))}'
             for s in range(2)]
    out = str(tmp_path / 'out')
    summary, stdout = run_benchmark(out, data, '--checkpoints', *given, '--val-fraction', '0.25',
                                    '--select', 'finetune_lr=1e-3,3e-3')
    selection = json.load(open(osp.join(out, 'selection.json')))
    scores = [c['score'] for c in selection['candidates']]
    assert [c['settings'] for c in selection['candidates']] == [dict(finetune_lr=1e-3),
                                                                dict(finetune_lr=3e-3)]
    assert selection['winner'] == selection['candidates'][scores.index(max(scores))]['settings']
    assert summary['selection'] == selection and selection['val_images'] == 4
    stems = {part: open(osp.join(out, 'splits', f'{part}.txt')).read().split()
             for part in ('train', 'val')}
    assert len(stems['val']) == 4 and len(stems['train']) == 12
    assert sorted(stems['train'] + stems['val']) == sorted(
        osp.splitext(f)[0] for f in os.listdir(osp.join(data, 'ann_dir', 'train')))
    assert '[probe] reading 12 train / 8 test images' in stdout
    for i in range(2):  # the candidates: trained on the rest, scored on the carved images
        cfg = Config.fromfile(osp.join(out, 'select', f'candidate{i}', 'finetune', 'configs',
                                       'baseline_seed0.py'))
        assert cfg.optim_wrapper.optimizer.lr == selection['candidates'][i]['settings'][
            'finetune_lr']
        train, test = cfg.train_dataloader.dataset, cfg.test_dataloader.dataset
        assert (train.split, train.ann_file) == ('train', osp.join(out, 'splits', 'train.txt'))
        assert (test.split, test.ann_file) == ('train', osp.join(out, 'splits', 'val.txt'))
    for name in ('baseline_seed0', 'baseline_seed1', 'untrained_seed1'):  # the scored runs
        cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', f'{name}.py'))
        assert cfg.optim_wrapper.optimizer.lr == selection['winner']['finetune_lr']
        assert cfg.train_dataloader.dataset.ann_file == osp.join(out, 'splits', 'train.txt')
        assert (cfg.test_dataloader.dataset.split, cfg.test_dataloader.dataset.ann_file) == (
            'test', '')
    report = open(osp.join(out, 'results.md')).read()
    assert report.startswith('Chosen on validation (baseline_seed0): finetune_lr')
    assert 'Validation: 4 images, carved from train' in report


def test_select_chooses_the_pretraining_length_on_validation(tmp_path):
    """--select epochs=1,2 pre-trains the first seed's baseline once per length, fine-tunes
    each on the training part and scores it on validation; the benchmark then pre-trains every
    seed for the winner's epochs, the first seed's run being the winning candidate itself."""
    from mmengine.config import Config
    data = scene_seg_folder(str(tmp_path / 'data'))
    out = str(tmp_path / 'out')
    summary, stdout = run_benchmark(out, data, '--methods', 'baseline', '--val-fraction', '0.25',
                                    '--select', 'epochs=1,2')
    selection = json.load(open(osp.join(out, 'selection.json')))
    assert [c['settings'] for c in selection['candidates']] == [dict(epochs=1), dict(epochs=2)]
    for i, epochs in enumerate((1, 2)):
        pretrained = osp.join(out, 'select', f'pretrain_{epochs}ep', 'pretrain')
        assert Config.fromfile(osp.join(pretrained, 'configs', 'baseline_seed0.py')
                               ).train_cfg.max_epochs == epochs
        key = json.load(open(osp.join(out, 'select', f'candidate{i}', 'finetune',
                                      'baseline_seed0', 'finetune_key.json')))
        assert osp.realpath(key['checkpoint'][0]).startswith(  # that length's encoder
            osp.realpath(osp.join(pretrained, 'baseline_seed0')) + os.sep)
    winner = selection['winner']['epochs']
    assert summary['settings']['epochs'] == winner
    for seed in (0, 1):
        assert Config.fromfile(osp.join(out, 'pretrain', 'configs', f'baseline_seed{seed}.py')
                               ).train_cfg.max_epochs == winner
    assert osp.realpath(osp.join(out, 'pretrain', 'baseline_seed0')) == osp.realpath(
        osp.join(out, 'select', f'pretrain_{winner}ep', 'pretrain', 'baseline_seed0'))
    assert '[run] reusing baseline_seed0' in stdout and '[run] started baseline_seed1' in stdout
    assert 'pre-trained for the candidate\'s epochs' in open(osp.join(out, 'selection.md')).read()


def test_the_datasets_own_val_split_is_the_default_validation(tmp_path):
    from repre_mm.benchmarks import seg_transfer
    with_val = scene_seg_folder(str(tmp_path / 'a'), counts=(('train', 4), ('val', 2),
                                                             ('test', 2)))
    data = seg_transfer.prepare_data(seg_transfer.parse_args(['--data', with_val, '--out',
                                                              str(tmp_path / 'out_a')]))
    assert data['finetune_splits'] == dict(train=('train', ''), val=('val', ''),
                                           test=('test', ''))
    assert data['probe_train'] == data['info'].pairs['train']
    without = scene_seg_folder(str(tmp_path / 'b'), counts=(('train', 4), ('test', 2)))
    args = seg_transfer.parse_args(['--data', without, '--out', str(tmp_path / 'out_b'),
                                    '--select', 'finetune_lr=1e-3,2e-3'])
    data = seg_transfer.prepare_data(args)
    assert 'val' not in data['finetune_splits']
    with pytest.raises(SystemExit, match='has none: give --val-fraction F'):
        seg_transfer.select_settings(args, data, {'baseline': [('c.py', 'c.pth')]})


@pytest.mark.parametrize('argv, message', [
    (['--checkpoints', 'baseline=a.pth', '--methods', 'repre'], '--checkpoints names its own'),
    (['--methods', 'baseline_equal_compute'], 'add baseline and repre to --methods'),
    (['--select', 'finetune_lr=1e-3,2e-3', '--no-finetune'], 'drop --no-finetune'),
    (['--val-fraction', '1.5'], 'give a fraction between 0 and 1'),
    (['--select', 'finetune_lrr=1e-3'], 'OPTION one of finetune_lr, finetune_iters, epochs'),
    (['--checkpoints', 'baseline=a.pth', '--select', 'epochs=60,120'],
     'pre-trains the candidates: not with --checkpoints'),
])
def test_arguments_that_cannot_go_together_are_refused_at_once(argv, message, capsys):
    from repre_mm.benchmarks import seg_transfer
    with pytest.raises(SystemExit):
        seg_transfer.parse_args(['--data', 'd'] + argv)
    assert message in capsys.readouterr().err


def test_a_batch_too_large_for_two_batches_an_epoch_is_refused_before_the_selection(tmp_path):
    """--select epochs pre-trains its candidates before the benchmark's own runs: the batch
    check comes first there too."""
    from repre_mm.benchmarks import seg_transfer
    data = scene_seg_folder(str(tmp_path / 'data'), counts=(('train', 6), ('val', 2),
                                                            ('test', 2)))
    args = seg_transfer.parse_args(['--data', data, '--out', str(tmp_path / 'out'),
                                    '--batch-size', '5', '--select', 'epochs=1,2'])
    with pytest.raises(SystemExit, match='pre-training images make fewer than 2 batches of 5'):
        seg_transfer.length_candidates(args, seg_transfer.prepare_data(args))
    assert not os.path.exists(tmp_path / 'out' / 'select')


@pytest.mark.parametrize('benchmark, own', [
    ('seg_transfer', dict(epochs=2, head_channels=16)),
    ('det_transfer', dict(neck_channels=16)),
])
def test_quick_sets_the_shared_and_its_own_smaller_defaults_and_given_options_win(
        benchmark, own):
    import importlib
    module = importlib.import_module(f'repre_mm.benchmarks.{benchmark}')
    extra = ['--pretrained', 'p'] if benchmark == 'det_transfer' else []
    quick = vars(module.parse_args(['--data', 'd', '--quick'] + extra))
    assert {k: quick[k] for k in ('seeds', 'finetune_iters', 'finetune_batch',
                                  'picture_images')} == dict(seeds=2, finetune_iters=4,
                                                             finetune_batch=2, picture_images=2)
    assert {k: quick[k] for k in own} == own
    full = vars(module.parse_args(['--data', 'd'] + extra))
    assert full['seeds'] == 3 and full['finetune_iters'] > 4
    given = module.parse_args(['--data', 'd', '--quick', '--seeds', '3'] + extra)
    assert given.seeds == 3


def test_a_run_that_wrote_no_metrics_is_an_error_naming_it_and_its_log(tmp_path):
    from repre_mm.benchmarks.transfer import run_metrics
    with pytest.raises(RuntimeError, match=r'the run of repre seed 1 wrote no metrics \(see its '
                       r'log under out/finetune\)'):
        run_metrics(str(tmp_path / 'metrics.json'), 'repre seed 1', 'out')


def test_a_misspelled_pretrain_split_is_an_error_naming_the_splits(tmp_path):
    from repre_mm.benchmarks import seg_transfer
    data = scene_seg_folder(str(tmp_path / 'data'), counts=(('train', 4), ('test', 2)))
    args = seg_transfer.parse_args(['--data', data, '--pretrain-splits', 'train', 'vall'])
    with pytest.raises(SystemExit, match='--pretrain-splits vall: no such split .* train'):
        seg_transfer.prepare_data(args)
    # the default names val, which this dataset lacks: train alone, no error
    assert seg_transfer.prepare_data(seg_transfer.parse_args(['--data', data]))[
        'pretrain_splits'] == ['train']


def test_the_report_names_the_fine_tuning_optimiser_of_the_config(tmp_path):
    from repre_mm.benchmarks.seg_transfer import optimizer_text
    assert optimizer_text('configs/downstream/mmseg/upernet_vit-small-p16_8xb2-10k_camvid-'
                          '360x480.py', 1e-3) == 'AdamW lr 0.001, layer decay 0.65'
    config = tmp_path / 'sgd.py'
    config.write_text("optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))\n")
    assert optimizer_text(str(config), 0.01) == 'SGD lr 0.01'


def test_probe_separates_an_encoder_that_sees_from_a_blind_one(tmp_path):
    """The probe's own control: a ViT whose patch embedding sees the pixels, against the same
    ViT made blind (patch embedding zeroed: every token is its position alone). The shapes'
    positions are random, so a blind encoder can only guess."""
    from mmpretrain.models import MoCoV3ViT
    from repre_mm.datasets import check_seg_folder
    from repre_mm.evaluation import SegmentationProbe
    root = scene_seg_folder(str(tmp_path / 'data'), counts=(('train', 32), ('test', 12)))
    info = check_seg_folder(root)
    probe = SegmentationProbe(info.pairs['train'], info.pairs['test'], info.classes,
                              short_side=48, patch=8, mean=[128] * 3, std=[64] * 3)
    torch.manual_seed(0)
    vit = MoCoV3ViT(arch=dict(embed_dims=64, num_layers=2, num_heads=4,
                              feedforward_channels=128), img_size=48, patch_size=8)
    vit.init_weights()
    seeing = probe.score_encoder(vit)
    with torch.no_grad():
        vit.patch_embed.projection.weight.zero_()
        vit.patch_embed.projection.bias.zero_()
    blind = probe.score_encoder(vit)
    pixels = probe.score_pixels()
    assert seeing['miou'] > blind['miou'] + 20, (seeing, blind)
    assert pixels['miou'] > blind['miou'] + 20, (pixels, blind)
    assert set(seeing['per_class']) == set(info.classes)


def test_full_size_camvid_config_is_a_custom_dataset_template():
    """The shipped GPU config: ViT-S/16 UperNet at CamVid's full resolution, reading any dataset
    of the folder layout through SegFolderDataset, evaluated with per-class IoU."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(
        ROOT, 'configs/downstream/mmseg/upernet_vit-small-p16_8xb2-10k_camvid-360x480.py'))
    assert cfg.model.backbone.arch == 'mocov3-small' and cfg.model.backbone.patch_size == 16
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.num_classes == 11
    assert cfg.train_dataloader.dataset.type == 'SegFolderDataset'
    assert [cfg[f'{k}_dataloader'].dataset.split for k in ('train', 'val', 'test')] == [
        'train', 'val', 'test']
    assert cfg.test_evaluator.type == 'PerClassIoUMetric'
    assert all(side % 16 == 0 for side in cfg.crop_size)


def test_quick_dino(tmp_path):
    """--framework dino: DINO's ViT (mmpretrain's VisionTransformer) through the same
    pre-training, probe and mmseg fine-tuning, with the same default methods as MoCo v3
    (equal compute included)."""
    from mmengine.config import Config
    data = scene_seg_folder(str(tmp_path / 'data'), counts=(('train', 16), ('test', 4)))
    out = str(tmp_path / 'out')
    summary, _ = run_benchmark(out, data, '--framework', 'dino', '--seeds', '1')
    assert {r['method'] for r in summary['results']} == {
        'baseline', 'repre', 'baseline_equal_compute', 'untrained'}
    assert all(0 <= r['finetune_miou'] <= 100 for r in summary['results'])
    cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', 'repre_seed0.py'))
    assert cfg.model.backbone.type == 'mmpretrain.VisionTransformer'
