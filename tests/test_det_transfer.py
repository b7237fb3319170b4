"""tools/benchmarks/det_transfer.py: Mask R-CNN fine-tuning through mmdet from pre-trained
tiny ViTs (the runs of a seg_transfer ``pretrain/`` folder, written here), against random
initialisation and the model before fine-tuning, on a generated COCO-format dataset (coloured
ellipses on noise, one class, masks converted by repre_mm.datasets.coco_from_masks)."""
import json
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

from helpers import run_transfer_benchmark

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VERDICTS = {'better', 'worse', 'no measurable difference'}
METRICS = ('box_ap', 'box_ap50', 'box_ap75', 'mask_ap', 'mask_ap50', 'mask_ap75')
METHODS = ('baseline', 'repre', 'baseline_equal_compute')


def ellipse_coco(root, counts=(('train', 8), ('test', 4)), seed=0):
    """A COCO-format instance dataset: ``root/images/<split>/*.png`` (landscape and portrait,
    noise background), one to two ellipses of the class 'blob' each, and
    ``root/annotations/instances_<split>.json`` written from their binary masks. Returns
    ``root``."""
    import cv2
    import numpy as np
    from repre_mm.datasets.coco_from_masks import masks_to_coco
    rng = np.random.default_rng(seed)
    sizes = ((96, 72), (72, 96), (88, 64))
    os.makedirs(osp.join(root, 'annotations'))
    for split, num in counts:
        images, masks = osp.join(root, 'images', split), osp.join(root, 'masks', split)
        os.makedirs(images)
        os.makedirs(masks)
        for i in range(num):
            w, h = sizes[i % len(sizes)]
            mask = np.zeros((h, w), np.uint8)
            for k in range(1 + i % 2):  # left and right halves: the ellipses never touch
                cx = int(rng.integers(w // 4 - 4, w // 4 + 4)) + k * w // 2
                axes = (int(rng.integers(8, w // 4 - 3)), int(rng.integers(10, h // 2 - 6)))
                cv2.ellipse(mask, ((cx, h // 2), (2 * axes[0], 2 * axes[1]), 0), 1, -1)
            image = rng.normal(110, 30, (h, w, 3))
            image[mask > 0] = (40, 90, 220) + rng.normal(0, 12, (int(mask.sum()), 3))
            cv2.imwrite(osp.join(images, f'{split}{i:02d}.png'),
                        np.clip(image, 0, 255).astype(np.uint8))
            cv2.imwrite(osp.join(masks, f'{split}{i:02d}.png'), mask)
        coco = masks_to_coco(images, masks, ['blob'], mode='binary',
                             image_root=osp.join(root, 'images'))
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return root


def tiny_pretrain_folder(out, seeds=2):
    """A seg_transfer ``pretrain/`` folder: ``configs/<method>_seed<s>.py`` (the shipped tiny
    MoCo v3 / RePre configs at 32-px crops, patch 8) and ``<method>_seed<s>/iter_1.pth`` with
    ``last_checkpoint``; the weights are each model's initial ones, the config stored in the
    checkpoint's meta as mmengine stores it."""
    from repre_mm.apis import init_model
    from repre_mm.benchmarks.pretrain import ViewSpec, dump_config, pretrain_config
    from repre_mm.utils.logging import quiet_mmengine
    quiet_mmengine()
    spec = ViewSpec(img_size=32, patch=8, mean=[110.0] * 3, std=[40.0] * 3)
    for index, method in enumerate(METHODS):
        for seed in range(seeds):
            name = f'{method}_seed{seed}'
            cfg = pretrain_config('mocov3', method, seed, 1, 8, spec)
            config = dump_config(cfg, osp.join(out, 'configs', f'{name}.py'))
            torch.manual_seed(100 * index + seed)  # every run its own weights
            model = init_model(config)
            checkpoint = osp.join(out, name, 'iter_1.pth')
            os.makedirs(osp.dirname(checkpoint))
            torch.save(dict(state_dict=model.state_dict(),
                            meta=dict(iter=1, cfg=cfg.pretty_text)), checkpoint)
            with open(osp.join(out, name, 'last_checkpoint'), 'w') as f:
                f.write(checkpoint)
    return out


def run_benchmark(out, data, *extra, timeout=900):
    return run_transfer_benchmark('det_transfer', out, data, *extra, timeout=timeout)


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    """The quick benchmark from a pretrain/ folder of 3 methods x 2 seeds, run once."""
    tmp = tmp_path_factory.mktemp('det')
    data = ellipse_coco(str(tmp / 'data'))
    pretrained = tiny_pretrain_folder(str(tmp / 'pretrain'))
    out = str(tmp / 'out')
    start = time.time()
    summary, stdout = run_benchmark(out, data, '--pretrained', pretrained)
    print(f'det_transfer --quick: {time.time() - start:.0f} s')
    return data, pretrained, out, summary, stdout


def test_quick_benchmark_end_to_end(quick_run):
    data, _, out, summary, _ = quick_run
    assert summary['data']['classes'] == ['blob']
    assert summary['data']['image_prefix'] == 'images/'
    assert summary['data']['counts'] == dict(train=dict(images=8, instances=12),
                                             test=dict(images=4, instances=6))
    assert {(r['method'], r['seed']) for r in summary['results']} == {
        (m, s) for m in METHODS + ('untrained', ) for s in range(2)}
    for r in summary['results']:
        for key in METRICS:
            assert 0 <= r[key] <= 100, (key, r)
        assert r['finetune_wall_s'] > 0
        assert r['pretrain_iters'] == (None if r['method'] == 'untrained' else 1)
    zero = summary['zero_iterations']
    assert zero['method'] == 'baseline' and zero['seed'] == 0
    assert all(0 <= zero[key] <= 100 for key in METRICS)
    paired = summary['paired']
    # the positive controls come first, then RePre against both baselines
    assert list(paired)[:2] == ['baseline - untrained', 'baseline_equal_compute - untrained']
    assert list(paired)[2:] == ['repre - baseline', 'repre - baseline (equal compute)']
    for diff in paired.values():
        assert set(diff) == set(METRICS)
        for d in diff.values():
            assert len(d['per_seed']) == 2
            if d['ci'] is None:  # every seed differed by the same amount
                assert len(set(d['per_seed'])) == 1 and d['verdict'].startswith('no spread')
                continue
            low, high = d['ci']
            assert low <= d['mean'] <= high
            assert d['verdict'] == ('better' if low > 0 else 'worse' if high < 0 else
                                    'no measurable difference')
    report = open(osp.join(out, 'results.md')).read()
    assert '| repre - baseline | box AP50 |' in report
    assert '| repre - baseline (equal compute) | mask AP |' in report
    assert '| baseline, 0 iterations (seed 0) | 1 |' in report
    assert 'before fine-tuning (0 iterations' in report
    assert osp.getsize(summary['picture']) > 1000
    assert set(summary['timing_s']) == {'data and encoders', 'fine-tuning', 'picture', 'total'}


def test_derived_config_loads_the_backbone_strictly_through_the_transfer_driver(quick_run):
    """What a user runs is what is measured: each fine-tuning ran transfer.sh, whose export and
    tools/train.py loaded every backbone weight strictly, then tools/test.py scored the test
    split with CocoMetric at the config's own score threshold."""
    from mmengine.config import Config
    _, _, out, _, _ = quick_run
    log = open(osp.join(out, 'finetune', 'repre_seed0.log')).read()
    assert 'backbone.pth' in log and '(strict)' in log
    scratch = open(osp.join(out, 'finetune', 'untrained_seed0.log')).read()
    # from scratch: the backbone's initial weights, written and loaded like an export
    assert 'wrote the initial backbone' in scratch and 'untrained_seed0/backbone.pth (strict)' \
        in scratch
    cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', 'repre_seed0.py'))
    backbone = cfg.model.backbone
    assert backbone.type == 'mmpretrain.MoCoV3ViT' and backbone.out_type == 'featmap'
    assert backbone.out_indices == (5, ) and backbone.stop_grad_conv1 is False
    assert backbone.init_cfg.strict is True
    assert cfg.model.neck.type == 'SimpleFeaturePyramid' and cfg.model.neck.in_channels == 128
    # patch 8: the pyramid's strides are half of the shipped stride-16 config's
    assert cfg.model.rpn_head.anchor_generator.strides == [2, 4, 8, 16, 32]
    assert cfg.model.roi_head.bbox_roi_extractor.featmap_strides == [2, 4, 8, 16]
    assert cfg.model.roi_head.bbox_head.num_classes == 1
    assert cfg.model.roi_head.mask_head.num_classes == 1
    assert cfg.model.test_cfg.rcnn.score_thr == 0.05  # mmdet's default, not 0
    coco, box_masks = cfg.test_evaluator
    assert coco.type == 'CocoMetric' and coco.metric == ['bbox', 'segm']
    assert box_masks.type == 'BoxMaskCocoMetric'
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 4
    metrics = json.load(open(osp.join(out, 'finetune', 'repre_seed0', 'metrics.json')))
    assert {'coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP_75',
            'box_mask/segm_mAP'} <= set(metrics)
    # the "0 iterations" reference: the baseline's seed-0 config, tested without training
    zero = osp.join(out, 'finetune', 'baseline_seed0_0_iters')
    assert osp.exists(osp.join(zero, 'metrics.json'))


def test_references_are_trained_like_the_runs_they_judge(quick_run):
    """From scratch: the same module with the same trainable parameters (names and shapes) as a
    pre-trained run, pos_embed included (MoCoV3ViT built without a checkpoint would freeze it);
    only the initial weights differ. "0 iterations": the very weights the baseline's seed-0
    fine-tuning started from (saved by that run: its backbone is the export, exactly), tested
    by tools/test.py."""
    from helpers import trainable_parameters
    from repre_mm.benchmarks.runs import file_key, read_json
    from repre_mm.utils.checkpoint import load_weights
    _, _, out, _, _ = quick_run
    configs = osp.join(out, 'finetune', 'configs')
    trained = trainable_parameters(osp.join(configs, 'baseline_seed0.py'), 'mmdet')
    scratch = trainable_parameters(osp.join(configs, 'untrained_seed0.py'), 'mmdet')
    assert 'backbone.pos_embed' in trained
    assert scratch == trained
    run = osp.join(out, 'finetune', 'baseline_seed0')
    initial = load_weights(osp.join(run, 'iter_0.pth'))
    export = load_weights(osp.join(run, 'backbone.pth'))
    assert set(export) == {k for k in initial if k.startswith('backbone.')}
    assert all(torch.equal(initial[k], v) for k, v in export.items() if k != 'backbone.pos_embed')
    # pos_embed: the export's, interpolated to the fine-tuning's patch grid as it was loaded
    from mmpretrain.models.utils import resize_pos_embed
    pretrained_grid, grid = (int((export['backbone.pos_embed'].shape[1] - 1)**0.5), ) * 2, \
        (int((initial['backbone.pos_embed'].shape[1] - 1)**0.5), ) * 2
    assert pretrained_grid != grid  # 32-px pre-training crops, 48-px fine-tuning
    assert torch.allclose(initial['backbone.pos_embed'], resize_pos_embed(
        export['backbone.pos_embed'], pretrained_grid, grid, 'bicubic', 1))
    key = read_json(osp.join(out, 'finetune', 'baseline_seed0_0_iters', 'zero_iters_key.json'))
    assert key['checkpoint'] == file_key(osp.join(run, 'iter_0.pth'))
    scratch_export = load_weights(osp.join(out, 'finetune', 'untrained_seed0', 'backbone.pth'))
    assert set(scratch_export) == set(export)
    qkv = 'backbone.layers.0.attn.qkv.weight'
    assert not torch.equal(scratch_export[qkv], export[qkv])  # only the weights differ


def test_written_finetune_config_trains_and_tests_with_the_tools(quick_run, tmp_path):
    """The derived config is an ordinary mmdet config: tools/train.py and tools/test.py run it
    as it is, the backbone loaded strictly from the export it names. Training never reads the
    test split: it trains with the test annotations moved away."""
    from repre_mm.benchmarks.det_transfer import detection_scores
    data, _, out, _, _ = quick_run
    config = osp.join(out, 'finetune', 'configs', 'repre_seed1.py')
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    work = str(tmp_path / 'work')
    test_annotations = osp.join(data, 'annotations', 'instances_test.json')
    os.rename(test_annotations, test_annotations + '.away')
    try:
        train = subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir', work],
                               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    finally:
        os.rename(test_annotations + '.away', test_annotations)
    assert train.returncode == 0, train.stderr[-3000:]
    log = train.stdout + train.stderr
    assert 'repre_seed1/backbone.pth (strict)' in log and 'loss_mask' in log
    from mmengine.config import Config  # its checkpoints are written atomically
    assert Config.fromfile(config).default_hooks.checkpoint.type == 'AtomicCheckpointHook'
    checkpoint = open(osp.join(work, 'last_checkpoint')).read().strip()
    metrics = str(tmp_path / 'metrics.json')
    test = subprocess.run([sys.executable, 'tools/test.py', config, checkpoint, '--work-dir',
                           str(tmp_path / 'test'), '--out', metrics, '--out-item', 'metrics'],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert test.returncode == 0, test.stderr[-3000:]
    # every AP key, or none at all when nothing was detected (then said): never a silent 0
    scores = detection_scores(json.load(open(metrics)))
    assert scores['no_detections'] or all(0 <= v <= 100 for k, v in scores.items()
                                          if k != 'no_detections')
    assert scores['no_detections'] == ('coco/bbox_mAP' not in json.load(open(metrics)))


def test_training_never_reads_the_test_split(quick_run):
    from mmengine.config import Config
    data, _, out, _, _ = quick_run
    for method in METHODS + ('untrained', ):
        cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', f'{method}_seed0.py'))
        assert cfg.train_dataloader.dataset.ann_file == osp.join(data, 'annotations',
                                                                 'instances_train.json')
        assert cfg.train_dataloader.dataset.data_root == data
        assert cfg.val_dataloader is None and cfg.val_cfg is None
        assert cfg.test_dataloader.dataset.ann_file == osp.join(data, 'annotations',
                                                                'instances_test.json')
        for evaluator in cfg.test_evaluator:
            assert evaluator.ann_file == osp.join(data, 'annotations', 'instances_test.json')


def test_restart_reuses_every_run(quick_run):
    data, pretrained, out, summary, _ = quick_run
    again, stdout = run_benchmark(out, data, '--pretrained', pretrained)
    assert '[run] started' not in stdout
    assert stdout.count('[run] reusing') == 3 * 2 + 2 + 1  # methods, untrained, 0 iterations
    assert again['results'] == summary['results']
    assert again['zero_iterations']['box_ap50'] == summary['zero_iterations']['box_ap50']


def test_first_seed_reports_the_fresh_seeds_only(quick_run):
    """--first-seed: a variant chosen on some seeds is confirmed on the others, and the report
    pairs those alone. Here seed 1 of the quick run: its fine-tunings are reused; only the
    "0 iterations" reference of seed 1 is new."""
    data, pretrained, out, summary, _ = quick_run
    again, stdout = run_benchmark(out, data, '--pretrained', pretrained, '--first-seed', '1',
                                  '--seeds', '1', '--methods', 'baseline', 'repre')
    assert stdout.count('[run] started') == 1 and '[run] started baseline_seed1_0_iters' in stdout
    assert stdout.count('[run] reusing') == 2 + 1  # baseline, repre; from scratch
    assert {(r['method'], r['seed']) for r in again['results']} == {
        (m, 1) for m in ('baseline', 'repre', 'untrained')}
    before = {(r['method'], r['seed']): r for r in summary['results']}
    for r in again['results']:
        assert all(r[key] == before[(r['method'], 1)][key] for key in METRICS), r
    assert again['zero_iterations']['seed'] == 1
    assert again['paired']['repre - baseline']['box_ap']['per_seed'] == [
        pytest.approx(before[('repre', 1)]['box_ap'] - before[('baseline', 1)]['box_ap'])]
    report = open(osp.join(out, 'results_from_seed1.md')).read()
    assert '| baseline, 0 iterations (seed 1) | 1 |' in report
    assert 'the same seed-1 model before fine-tuning' in report
    assert again['picture'] and osp.isfile(again['picture'])
    # the report of seeds 0.. stays: the fresh seeds' one has its own name
    assert again['picture'].endswith('predictions_from_seed1.png')
    with open(osp.join(out, 'results.json')) as f:
        assert {(r['method'], r['seed']) for r in json.load(f)['results']} == {
            (r['method'], r['seed']) for r in summary['results']}


def test_given_checkpoints_are_the_same_encoders(quick_run, tmp_path):
    """--checkpoints: the config mmengine stored in each checkpoint gives the backbone that
    --pretrained reads from the folder's configs."""
    from repre_mm.benchmarks import det_transfer
    from repre_mm.benchmarks.transfer import backbone_of
    data, pretrained, _, _, _ = quick_run
    given = [f'{m}={pretrained}/{m}_seed{s}/iter_1.pth' for m in ('baseline', 'repre')
             for s in range(2)]
    args = det_transfer.parse_args(['--data', data, '--out', str(tmp_path), '--checkpoints',
                                    *given])
    runs = det_transfer.encoders(args)
    assert list(runs) == ['baseline', 'repre'] and all(len(s) == 2 for s in runs.values())
    for method, seeds in runs.items():
        for seed, (config, checkpoint) in enumerate(seeds):
            own = osp.join(pretrained, 'configs', f'{method}_seed{seed}.py')
            assert backbone_of(config) == backbone_of(own)
            assert checkpoint.endswith(f'{method}_seed{seed}/iter_1.pth')


def test_bad_arguments_and_data_are_clear_errors(tmp_path):
    from repre_mm.benchmarks import det_transfer
    with pytest.raises(SystemExit) as error:  # no encoders
        det_transfer.parse_args(['--data', str(tmp_path)])
    assert error.value.code == 2
    data = ellipse_coco(str(tmp_path / 'data'), counts=(('train', 2), ('test', 1)))
    os.remove(osp.join(data, 'annotations', 'instances_test.json'))
    with pytest.raises(SystemExit, match='instances_test.json is missing.*masks_to_coco'):
        det_transfer.check_coco_folder(data)
    with pytest.raises(SystemExit, match='no configs/ folder'):
        det_transfer.encoders(det_transfer.parse_args(
            ['--data', data, '--pretrained', str(tmp_path)]))


def test_images_at_file_name_relative_to_the_root(tmp_path):
    """Without images/, file_name is read relative to --data; a missing image is named."""
    from repre_mm.benchmarks import det_transfer
    data = ellipse_coco(str(tmp_path / 'data'), counts=(('train', 2), ('test', 1)))
    os.rename(osp.join(data, 'images'), osp.join(data, 'pictures'))
    for split in ('train', 'test'):
        path = osp.join(data, 'annotations', f'instances_{split}.json')
        coco = json.load(open(path))
        for image in coco['images']:
            image['file_name'] = osp.join('pictures', image['file_name'])
        json.dump(coco, open(path, 'w'))
    assert det_transfer.check_coco_folder(data)['image_prefix'] == ''
    os.remove(osp.join(data, 'pictures', 'test', 'test00.png'))
    with pytest.raises(SystemExit, match='1 of 3 images are not at file_name relative'):
        det_transfer.check_coco_folder(data)


def test_full_size_custom_coco_config(tmp_path):
    """The GPU template: the shipped ViT-S/16 Mask R-CNN on a COCO-format custom dataset, its
    data lines at the top, trained on the train JSON, scored on the test JSON; the model and
    both datasets build (the data lines pointed at a generated dataset)."""
    from mmdet.registry import DATASETS, MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    path = osp.join(ROOT,
                    'configs/downstream/mmdet/mask-rcnn_vit-small-p16-sfp_8xb2-1x_coco-custom.py')
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.arch == 'mocov3-small' and cfg.model.backbone.patch_size == 16
    assert cfg.model.roi_head.bbox_head.num_classes == len(cfg.classes) == 1
    assert cfg.model.roi_head.mask_head.num_classes == 1
    train, test = cfg.train_dataloader.dataset, cfg.test_dataloader.dataset
    assert train.ann_file == 'annotations/instances_train.json'
    assert test.ann_file == 'annotations/instances_test.json'
    assert train.metainfo.classes == test.metainfo.classes == cfg.classes
    assert train.data_root == test.data_root == cfg.data_root
    assert cfg.val_dataloader.dataset.ann_file == test.ann_file
    assert cfg.test_evaluator.ann_file == cfg.data_root + test.ann_file
    assert cfg.test_evaluator.metric == ['bbox', 'segm']
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_epochs  # the test split once
    data = ellipse_coco(str(tmp_path / 'data'), counts=(('train', 3), ('test', 2)))
    text = open(path).read()
    assert text.count("data_root = 'data/my_instances/'") == 1
    copy = tmp_path / 'my_config.py'  # what a user does: a copy with the data lines changed
    copy.write_text(text.replace("data_root = 'data/my_instances/'", f"data_root = '{data}/'")
                    .replace("classes = ('horse', )", "classes = ('blob', )")
                    .replace("_base_ = './", f"_base_ = '{osp.dirname(path)}/"))
    cfg = Config.fromfile(str(copy))
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        cfg.model.backbone.init_cfg = None
        MODELS.build(cfg.model)
        train = DATASETS.build(cfg.train_dataloader.dataset)
        test = DATASETS.build(cfg.test_dataloader.dataset)
    assert len(train) == 3 and len(test) == 2
    assert train.metainfo['classes'] == ('blob', )
    assert train.get_data_info(0)['instances'][0]['bbox_label'] == 0
    assert cfg.test_evaluator.ann_file == f'{data}/annotations/instances_test.json'


def test_transfer_driver_knows_the_custom_coco_task(tmp_path):
    """transfer.sh's task name resolves to the template: training stops at its placeholder
    data_root, which the error names."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable, OMP_NUM_THREADS='1',
               WORK_DIR=str(tmp_path / 'work'))
    env.pop('CONFIG', None)
    proc = subprocess.run(['bash', 'tools/benchmarks/transfer.sh', 'coco-custom-mask-rcnn-vit-s',
                           'none', '1'], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "data_root='data/my_instances/' does not exist" in proc.stderr, proc.stderr[-2000:]


def test_missing_metric_keys_are_zero_only_when_nothing_was_detected():
    from repre_mm.benchmarks.det_transfer import BOX_MASK_METRICS, METRICS, detection_scores
    full = {key: 0.5 for key in list(METRICS.values()) + list(BOX_MASK_METRICS.values())}
    scores = detection_scores(full)
    assert scores['box_ap'] == 50.0 and scores['box_mask_ap'] == 50.0
    assert scores['no_detections'] is False
    nothing = detection_scores({'coco/other': 1.0})  # no detection at all: every key absent
    assert nothing['no_detections'] is True and all(nothing[m] == 0.0 for m in METRICS)
    boxes_only = {k: v for k, v in full.items() if 'segm' not in k}
    with pytest.raises(KeyError, match='segm_mAP'):
        detection_scores(boxes_only)


def shapes_coco(root, num=8, seed=0):
    """8 images 96 x 64, each with two instances of 'shape' (a cross with arms a quarter wide, or
    a right triangle: filled boxes cover them at IoU < 0.5, so only a mask head that learned
    their shapes scores segm AP); the same annotations as train and test. Returns ``root``."""
    import cv2
    import numpy as np
    from repre_mm.datasets.coco_from_masks import masks_to_coco
    rng = np.random.default_rng(seed)
    images, masks = osp.join(root, 'images'), osp.join(root, 'masks')
    for folder in (images, masks, osp.join(root, 'annotations')):
        os.makedirs(folder)
    for i in range(num):
        mask = np.zeros((64, 96), np.uint8)
        for k in range(2):
            x0, y0, size = k * 48 + int(rng.integers(2, 8)), int(rng.integers(2, 12)), \
                int(rng.integers(30, 38))
            if (i + k) % 2 == 0:
                centre, half = size // 2, size // 8 + 1
                mask[y0:y0 + size, x0 + centre - half:x0 + centre + half] = k + 1
                mask[y0 + centre - half:y0 + centre + half, x0:x0 + size] = k + 1
            else:
                corners = np.array([[x0, y0 + size], [x0 + size, y0 + size], [x0, y0]], np.int32)
                cv2.fillPoly(mask, [corners], k + 1)
        image = rng.normal(110, 30, (64, 96, 3))
        image[mask > 0] = (40, 90, 220) + rng.normal(0, 12, (int((mask > 0).sum()), 3))
        cv2.imwrite(osp.join(images, f'{i:02d}.png'), np.clip(image, 0, 255).astype(np.uint8))
        cv2.imwrite(osp.join(masks, f'{i:02d}.png'), mask)
    coco = masks_to_coco(images, masks, ['shape'], mode='instance', image_root=images)
    for split in ('train', 'test'):
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
    return root


def test_mask_rcnn_overfits_a_few_images(tmp_path):
    """Masks that learn: the benchmark's Mask R-CNN (its derived config at the default lr, a
    tiny ViT from random weights, the simple feature pyramid), 200 iterations on 8 images of
    crosses and triangles, tested on those images, fits their masks (segm AP >= 50), well above
    its own boxes filled as masks. Before the pyramid's levels were made contiguous, mmcv's
    RoIAlign read them scrambled: segm AP 0.0, mask loss 0.68 (chance 0.69), box AP 10."""
    from repre_mm.benchmarks import det_transfer
    data_root = shapes_coco(str(tmp_path / 'data'))
    pretrained = tiny_pretrain_folder(str(tmp_path / 'pretrain'), seeds=1)
    out = str(tmp_path / 'out')
    args = det_transfer.parse_args(['--data', data_root, '--pretrained', pretrained, '--out', out,
                                    '--finetune-iters', '200', '--short-side', '64',
                                    '--neck-channels', '32'])
    data = det_transfer.check_coco_folder(data_root)
    config = det_transfer.finetune_config(
        args, data, osp.join(pretrained, 'configs', 'baseline_seed0.py'), 0, 'overfit', None)
    work = str(tmp_path / 'work')
    env = dict(os.environ, PYTHONPATH=ROOT)
    for command in (['train.py', config, '--work-dir', work],
                    ['test.py', config, osp.join(work, 'iter_200.pth'), '--work-dir',
                     osp.join(work, 'test'), '--out', osp.join(work, 'metrics.json'),
                     '--out-item', 'metrics']):
        done = subprocess.run([sys.executable, osp.join(ROOT, 'tools', command[0]), *command[1:]],
                              capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    with open(osp.join(work, 'metrics.json')) as f:
        scores = det_transfer.detection_scores(json.load(f))
    print({k: round(v, 1) for k, v in scores.items() if k != 'no_detections'})
    assert scores['mask_ap'] >= 50
    assert scores['mask_ap'] >= scores['box_mask_ap'] + 30


def test_box_mask_metric_scores_the_boxes_filled_not_the_masks(tmp_path):
    """BoxMaskCocoMetric, from the same predictions as CocoMetric: a rectangle found by its exact
    box with an empty mask scores segm AP 0 as a mask and 100 as a filled box; the predictions
    the other metric reads are left as they were."""
    import numpy as np
    import repre_mm  # noqa: F401
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import METRICS as DET_METRICS
    from repre_mm.datasets.coco_from_masks import instance_annotation
    truth = np.zeros((40, 60), bool)
    truth[10:30, 5:45] = True
    coco = dict(images=[dict(id=1, file_name='a.png', height=40, width=60)],
                categories=[dict(id=1, name='thing')],
                annotations=[dict(instance_annotation(truth), id=1, image_id=1, category_id=1,
                                  iscrowd=0)])
    ann_file = str(tmp_path / 'ann.json')
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    pred = dict(bboxes=torch.tensor([[5.0, 10.0, 45.0, 30.0]]), scores=torch.tensor([0.9]),
                labels=torch.tensor([0]), masks=torch.zeros(1, 40, 60, dtype=torch.bool))
    sample = dict(img_id=1, ori_shape=(40, 60), pred_instances=pred)
    results = {}
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        box_mask_metric = DET_METRICS.build(dict(type='BoxMaskCocoMetric', ann_file=ann_file))
    for metric in (CocoMetric(ann_file=ann_file, metric='segm'), box_mask_metric):
        metric.dataset_meta = dict(classes=('thing', ))
        metric.process({}, [sample])
        results.update(metric.evaluate(1))
    assert results['coco/segm_mAP'] == 0.0
    assert results['box_mask/segm_mAP'] == 1.0
    assert not pred['masks'].any()  # the metric filled a copy


def test_split_coco_carves_whole_images_with_a_fixed_seed():
    from repre_mm.datasets.splits import split_coco
    coco = dict(info={}, categories=[dict(id=1, name='a')],
                images=[dict(id=i, file_name=f'{i}.png') for i in range(10)],
                annotations=[dict(id=100 + i, image_id=i % 10, category_id=1) for i in range(15)])
    rest, val = split_coco(coco, 0.3, seed=0)
    assert len(val['images']) == 3 and len(rest['images']) == 7
    val_ids = {im['id'] for im in val['images']}
    assert val_ids.isdisjoint(im['id'] for im in rest['images'])
    assert {a['image_id'] for a in val['annotations']} <= val_ids
    assert len(val['annotations']) + len(rest['annotations']) == 15
    assert split_coco(coco, 0.3, seed=0)[1] == val  # the same images every time
    assert rest['categories'] == coco['categories'] == val['categories']
    with pytest.raises(ValueError, match='at least one image'):
        split_coco(coco, 0.01)


def test_select_candidates_and_the_choice(capsys):
    import argparse
    from repre_mm.benchmarks import det_transfer
    from repre_mm.benchmarks.selection import choose, parse_select
    parser = argparse.ArgumentParser()
    candidates = parse_select(parser, ['finetune_lr=1e-4,2e-4', 'finetune-iters=300,600'])
    assert candidates == [dict(finetune_lr=1e-4, finetune_iters=300),
                          dict(finetune_lr=1e-4, finetune_iters=600),
                          dict(finetune_lr=2e-4, finetune_iters=300),
                          dict(finetune_lr=2e-4, finetune_iters=600)]
    for bad in ('finetune_batch=2,4', 'finetune_lr', 'finetune_iters=3.5'):
        with pytest.raises(SystemExit):
            parse_select(parser, [bad])
    # the pre-training length only where the benchmark pre-trains (seg_transfer, not det)
    with pytest.raises(SystemExit):
        det_transfer.parse_args(['--data', 'd', '--pretrained', 'p', '--select', 'epochs=60,120'])
    assert 'epochs only where the benchmark pre-trains its encoders' in capsys.readouterr().err
    record = choose(candidates, [10.0, 12.5, 12.5, 3.0], 'mask AP', 'validation')
    assert record['winner'] == candidates[1]  # the best; the first of equal ones
    assert 'highest mask AP on the validation split: 12.50' in record['why']


def test_select_chooses_on_validation_and_the_test_runs_use_the_choice(tmp_path):
    """--val-fraction carves validation images out of train (training never sees them), --select
    fine-tunes the first seed's baseline once per candidate, scored on them (never on test), and
    every run the report scores on test uses the winner; selection.json / .md and the report
    say which won and on what numbers."""
    from mmengine.config import Config
    data = ellipse_coco(str(tmp_path / 'data'))
    pretrained = tiny_pretrain_folder(str(tmp_path / 'pretrain'))
    out = str(tmp_path / 'out')
    summary, _ = run_benchmark(out, data, '--pretrained', pretrained, '--methods', 'baseline',
                               'repre', '--val-fraction', '0.25', '--select',
                               'finetune_lr=1e-4,3e-4')
    selection = json.load(open(osp.join(out, 'selection.json')))
    scores = [c['score'] for c in selection['candidates']]
    assert [c['settings'] for c in selection['candidates']] == [dict(finetune_lr=1e-4),
                                                                dict(finetune_lr=3e-4)]
    assert selection['winner'] == selection['candidates'][scores.index(max(scores))]['settings']
    assert summary['selection'] == selection and selection['val_images'] == 2
    val = json.load(open(osp.join(out, 'splits', 'instances_val.json')))
    train = json.load(open(osp.join(out, 'splits', 'instances_train.json')))
    assert len(val['images']) == 2 and len(train['images']) == 6
    val_files = {im['file_name'] for im in val['images']}
    for i in range(2):  # the candidates: trained on the rest, scored on validation
        cfg = Config.fromfile(osp.join(out, 'select', f'candidate{i}', 'finetune', 'configs',
                                       'baseline_seed0.py'))
        assert cfg.train_dataloader.dataset.ann_file == osp.join(out, 'splits',
                                                                 'instances_train.json')
        assert cfg.test_dataloader.dataset.ann_file == osp.join(out, 'splits',
                                                                'instances_val.json')
        assert all('instances_test' not in e.ann_file for e in cfg.test_evaluator)
    for name in ('baseline_seed0', 'repre_seed1', 'untrained_seed0'):  # the scored runs
        cfg = Config.fromfile(osp.join(out, 'finetune', 'configs', f'{name}.py'))
        assert cfg.optim_wrapper.optimizer.lr == selection['winner']['finetune_lr']
        assert cfg.train_dataloader.dataset.ann_file.endswith('splits/instances_train.json')
        assert cfg.test_dataloader.dataset.ann_file.endswith('annotations/instances_test.json')
    assert not val_files & {im['file_name'] for im in train['images']}
    report = open(osp.join(out, 'results.md')).read()
    assert report.startswith('Chosen on validation (baseline_seed0): finetune_lr')
    assert 'Validation: 2 images, carved from train' in report
    assert '| finetune_lr 0.0001 |' in open(osp.join(out, 'selection.md')).read()


def test_select_without_a_validation_split_is_a_clear_error(tmp_path):
    data = ellipse_coco(str(tmp_path / 'data'), counts=(('train', 3), ('test', 2)))
    pretrained = tiny_pretrain_folder(str(tmp_path / 'pretrain'), seeds=1)
    proc = subprocess.run(
        [sys.executable, 'tools/benchmarks/det_transfer.py', '--data', data, '--pretrained',
         pretrained, '--quick', '--seeds', '1', '--out', str(tmp_path / 'out'), '--select',
         'finetune_lr=1e-4,2e-4'], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert 'there is none: give --val-fraction F' in proc.stderr, proc.stderr[-2000:]
