"""DINO: loss formula, centre and teacher EMA rules, temperature warm-up, last-layer freeze."""
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

from mmpretrain.registry import HOOKS, MODELS
from helpers import K_DINO as K
from helpers import shrink_pretrain_cfg, tiny_dino, tiny_repre, write_images

ROOT = osp.dirname(osp.dirname(__file__))


def multicrop(batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(batch, 3, 32, 32, generator=g) for _ in range(2)] +
            [torch.randn(batch, 3, 16, 16, generator=g) for _ in range(3)])


def test_loss_equals_the_dino_cross_entropy_written_out():
    head = MODELS.build(dict(type='DINODistillationHead', out_channels=K, student_temp=0.1,
                             teacher_temp=0.05))
    head.center.copy_(torch.randn(1, K))
    B, V = 4, 5
    student, teacher = torch.randn(V * B, K), torch.randn(2 * B, K)
    center = head.center.clone()
    loss = head.loss(student, teacher, num_views=V)
    # direct: for each sample, teacher view t and student view v != t
    total, pairs = 0., 0
    for t in range(2):
        for v in range(V):
            if v == t:
                continue
            for b in range(B):
                p = torch.softmax((teacher[t * B + b] - center[0]) / 0.05, 0)
                log_q = torch.log_softmax(student[v * B + b] / 0.1, 0)
                total += -(p * log_q).sum() / B
            pairs += 1
    assert torch.allclose(loss, total / pairs, atol=1e-5)
    # centre: EMA (0.9) of the teacher's batch mean
    assert torch.allclose(head.center, 0.9 * center + 0.1 * teacher.mean(0, keepdim=True))


def test_teacher_follows_the_ema_rule_and_sees_only_global_crops():
    MessageHub.get_current_instance().update_info('max_iters', 10)
    torch.manual_seed(0)
    model = MODELS.build(tiny_dino())
    model.init_weights()
    teacher_inputs = []
    model.teacher.module[0].register_forward_hook(lambda m, a, o: teacher_inputs.append(a[0]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.loss(multicrop(), None)['loss'].backward()  # step 0: the teacher copies the student
    assert teacher_inputs[0].shape == (6, 3, 32, 32)  # 2 global views x batch 3, no local
    optimizer.step()
    teacher_before = {k: v.clone() for k, v in model.teacher.module.named_parameters()}
    student = dict(torch.nn.Sequential(model.backbone, model.neck).named_parameters())
    model.loss(multicrop(seed=1), None)  # step 1: teacher <- (1 - m) teacher + m student
    m = 0.004 * (math.cos(math.pi * 1 / 10) + 1) / 2  # CosineEMA towards momentum 0
    for name, value in model.teacher.module.named_parameters():
        expected = (1 - m) * teacher_before[name] + m * student[name]
        assert torch.allclose(value, expected, atol=1e-6), name
    assert any(not torch.equal(teacher_before[n], student[n]) for n in student)


def test_student_batches_same_size_crops_together():
    model = MODELS.build(tiny_dino())
    calls = []
    model.backbone.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape)))
    model.loss(multicrop(), None)
    assert calls == [(6, 3, 32, 32), (9, 3, 16, 16)]


@HOOKS.register_module()
class _RecordDINOState(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.temps, self.last_layer = [], []

    def before_train_epoch(self, runner):
        self.temps.append(runner.model.head.teacher_temp)
        self.last_layer.append(runner.model.neck.last_layer.parametrizations.weight.original1
                               .detach().clone())

    def after_train(self, runner):
        self.last_layer.append(runner.model.neck.last_layer.parametrizations.weight.original1
                               .detach().clone())


def four_image_run(tmp_path, path, recorder):
    """A recipe shrunk to 4 images of batch 2, DINO's temperature warm-up over 2 passes and
    the last layer frozen for 1, and a hook that records them."""
    images = write_images(str(tmp_path / 'img'), num=4, size=40)
    cfg = shrink_pretrain_cfg(Config.fromfile(osp.join(ROOT, path)), images,
                              str(tmp_path / 'work'))
    cfg.custom_hooks = [
        dict(type='DINOTeacherTempHook', warmup_temp=0.04, temp=0.07, warmup_epochs=2,
             freeze_last_layer_epochs=1),
        dict(type=recorder)
    ]
    return cfg


@pytest.mark.parametrize('repre', [False, True], ids=['dino', 'repre_dino'])
def test_runner_temperature_warmup_and_last_layer_freeze(tmp_path, repre):
    path = 'configs/{}dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py'.format(
        'repre/repre_' if repre else 'baselines/')
    cfg = four_image_run(tmp_path, path, recorder='_RecordDINOState')
    cfg.train_cfg.max_epochs = 4  # 4 images, batch 2: 2 iterations an epoch
    runner = Runner.from_cfg(cfg)
    runner.train()
    [record] = [h for h in runner.hooks if isinstance(h, _RecordDINOState)]
    assert record.temps == pytest.approx([0.04, 0.055, 0.07, 0.07])
    w = record.last_layer
    assert torch.equal(w[0], w[1])  # frozen during epoch 0
    assert not torch.equal(w[1], w[2])  # trained from epoch 1 on
    # weight decay 0.04 -> 0.4 by cosine over the recipe's 100 epochs (8 of its 200 iterations
    # done here) on the regularised group; the groups without decay stay at 0
    decays = sorted({g['weight_decay'] for g in runner.optim_wrapper.param_groups})
    expected = 0.4 + (0.04 - 0.4) * (1 + math.cos(math.pi * 8 / 200)) / 2
    assert decays[0] == 0 and decays[-1] == pytest.approx(expected, abs=1e-4)
    logged = runner.message_hub.log_scalars
    assert math.isfinite(logged['train/loss'].current())
    if repre:
        assert logged['train/loss_rec'].current() > 0


@HOOKS.register_module(force=True)
class _RecordDINOStatePerIteration(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.temps, self.frozen = [], []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.temps.append(runner.model.head.teacher_temp)
        self.frozen.append(runner.model.neck.freeze_last_layer)


def test_an_iteration_based_run_warms_the_temperature_up_over_passes_over_the_data(tmp_path):
    """The equal-compute baseline trains an IterBasedTrainLoop, where runner.epoch stays 0:
    the temperature and the last-layer freeze must follow the passes over the data there too,
    as an epoch-based run of the same data does."""
    path = 'configs/baselines/dino_vit-small-p16_16xb64-amp-coslr-100e_in1k.py'
    cfg = four_image_run(tmp_path, path, recorder='_RecordDINOStatePerIteration')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=8)  # 2 iterations a pass
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=8, by_epoch=False)
    runner = Runner.from_cfg(cfg)
    runner.train()
    [record] = [h for h in runner.hooks if isinstance(h, _RecordDINOStatePerIteration)]
    assert record.temps == pytest.approx([0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07])
    assert record.frozen == [True, True] + [False] * 6


def test_repre_on_dino_reconstructs_global_crops_only():
    repre = MODELS.build(tiny_repre(framework=tiny_dino()))
    decoded = []
    repre.decoder.register_forward_hook(lambda m, a, o: decoded.append(tuple(o.shape)))
    losses = repre.loss(multicrop(), None)
    assert decoded == [(6, 3, 32, 32)]
    assert set(losses) == {'loss', 'loss_rec'}
    repre_all = MODELS.build(tiny_repre(framework=tiny_dino(), reconstruct_local_crops=True))
    decoded.clear()
    repre_all.decoder.register_forward_hook(lambda m, a, o: decoded.append(tuple(o.shape)))
    repre_all.loss(multicrop(), None)
    assert decoded == [(6, 3, 32, 32), (9, 3, 16, 16)]
