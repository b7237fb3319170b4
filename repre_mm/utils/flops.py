"""Forward FLOP counts (multiply-accumulates, fvcore's convention) with mmengine's analyzer.

mmengine's ``FlopAnalyzer`` has no handle for ``aten::scaled_dot_product_attention``, the fused
attention mmpretrain's ViT uses on torch >= 2, and would silently count attention as free; the
handle below adds it (Q @ K^T and attn @ V).
"""
from typing import Any, List

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape


def _sdpa_flop(inputs: List[Any], outputs: List[Any]) -> int:
    q, k, v = (get_shape(x) for x in inputs[:3])
    *batch, n_q, d = q
    n_k, d_v = k[-2], v[-1]
    prod = 1
    for b in batch:
        prod *= b
    return prod * n_q * n_k * (d + d_v)


def count_flops(model: torch.nn.Module, inputs) -> int:
    """Total forward MACs of ``model(inputs)``; ``inputs`` is a tensor or a list of tensors
    passed as one argument."""
    was_training = model.training
    model.eval()
    try:
        analyzer = FlopAnalyzer(model, (inputs, ))
        analyzer.set_op_handle('aten::scaled_dot_product_attention', _sdpa_flop)
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        return int(analyzer.total())
    finally:
        model.train(was_training)
