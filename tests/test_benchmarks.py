"""tools/benchmarks/overhead.py and tools/analysis/decoder_cost.py, and the FLOP counter."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from torch import nn

from repre_mm.utils.flops import count_flops

ROOT = osp.dirname(osp.dirname(__file__))


def test_flop_counter_matches_hand_computed_macs():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, torch.randn(2, 3, 10, 12)) == 2 * 8 * 10 * 12 * 3 * 3 * 3
    linear = nn.Linear(16, 5)
    assert count_flops(linear, torch.randn(4, 7, 16)) == 4 * 7 * 16 * 5

    class Attention(nn.Module):
        def forward(self, x):  # B x heads x N x d
            return nn.functional.scaled_dot_product_attention(x, x, x)

    # Q @ K^T and attn @ V: 2 x B x heads x N x N x d
    assert count_flops(Attention(), torch.randn(2, 3, 10, 8)) == 2 * 2 * 3 * 10 * 10 * 8


def _run(args):
    out = subprocess.run([sys.executable] + args, cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]


def test_overhead_quick_prints_every_field():
    [result] = _run(['tools/benchmarks/overhead.py', '--quick'])
    for key in ('time_ratio', 'memory_ratio', 'decoder_flops_ratio', 'wrapper_off_time_ratio',
                'median_step_s', 'peak_memory_mb', 'device', 'dtype', 'batch', 'img_size'):
        assert key in result, key
    assert set(result['median_step_s']) == {'repre', 'base', 'off'}
    assert all(v > 0 for v in result['median_step_s'].values())
    assert result['peak_memory_mb']['repre'] > 0 and result['peak_memory_mb']['base'] > 0
    assert 0 < result['decoder_flops_ratio'] < 1
    assert result['device'] == 'cpu' and result['dtype'] == 'float32'


def test_decoder_cost_of_the_default_recipes():
    small, base = _run(['tools/analysis/decoder_cost.py'])
    assert 21 < small['encoder_params_m'] < 23 and 85 < base['encoder_params_m'] < 87
    for r in (small, base):
        assert r['decoder_flops_ratio'] <= 0.10
        assert r['decoder_params_m'] < 0.05 * r['encoder_params_m']


def test_overhead_dino_pair_decodes_the_global_crops_only():
    [result] = _run(['tools/benchmarks/overhead.py', '--quick', '--pair', 'dino', '--no-memory'])
    assert result['views'] == [28, 28] + [12] * 10  # 2 global + 10 local crops (96/224 of 28)
    assert result['configs'][0].startswith('repre_dino') and result['configs'][1].startswith('dino')
    # the decoder runs on 2 of 12 crops: its share of the step's encoder FLOPs is well below
    # its per-view ratio, and above the share it would have if the crops were all global
    assert result['decoder_flops_share'] < result['decoder_flops_ratio']
    assert result['decoder_flops_share'] > result['decoder_flops_ratio'] * 2 / 12
    assert result['memory_ratio'] is None and result['time_ratio'] > 0


def test_overhead_compile_times_the_four_steps_and_keeps_compilation_apart():
    [result] = _run(['tools/benchmarks/overhead.py', '--quick', '--compile', '--no-memory',
                     '--extra-models', 'repre_compiled_fused', 'repre_cp', 'repre_cl'])
    assert set(result['median_step_s']) == {'repre', 'base', 'repre_compiled', 'base_compiled',
                                            'repre_compiled_fused', 'repre_cp', 'repre_cl'}
    assert set(result['over_eager_base']) == set(result['median_step_s'])
    assert result['over_eager_base']['base'] == 1.0
    assert all(v > 0 for v in result['median_step_s'].values())
    steps = result['median_step_s']
    # (the medians are printed rounded to 0.1 ms, the ratios from the exact ones)
    assert result['compiled_repre_over_eager_base'] == pytest.approx(
        steps['repre_compiled'] / steps['base'], rel=0.01)
    assert result['compiled_repre_over_compiled_base'] == pytest.approx(
        steps['repre_compiled'] / steps['base_compiled'], rel=0.01)
    # compiling made RePre's first step far longer than the rest: reported, not in the medians
    # (the base's blocks are the same code, compiled by then: its first step is about a step)
    assert set(result['compile_s']) == {'repre_compiled', 'base_compiled'}
    assert result['compile_s']['repre_compiled'] > 5 * steps['repre_compiled']
    assert result['wrapper_off_time_ratio'] is None


def test_overhead_refuses_an_unknown_model_name():
    out = subprocess.run([sys.executable, 'tools/benchmarks/overhead.py', '--quick',
                          '--extra-models', 'base_cp'], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 2 and "model 'base_cp'" in out.stderr
