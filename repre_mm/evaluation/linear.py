"""Linear probes of frozen features: one full-batch AdamW fit, for the image-level linear probe
and the dense (per-patch) probes."""
from typing import Tuple

import torch
import torch.nn.functional as F


def linear_probe_accuracy(train_feats: torch.Tensor, train_labels: torch.Tensor,
                          test_feats: torch.Tensor, test_labels: torch.Tensor,
                          steps: int = 300, lr: float = 0.01, weight_decay: float = 1e-4,
                          seed: int = 0) -> float:
    """Top-1 (percent) of a linear classifier on frozen, standardised features.

    Full-batch AdamW on the cross-entropy; meant for small feature sets (the small-scale
    benchmark). ImageNet linear probes use the mmpretrain configs under configs/benchmarks.
    """
    mean, std = train_feats.mean(0), train_feats.std(0) + 1e-6
    x_train, x_test = (train_feats - mean) / std, (test_feats - mean) / std
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    weight, bias = fit_linear(x_train, train_labels, num_classes, steps, lr, weight_decay,
                              torch.Generator().manual_seed(seed))
    pred = (x_test @ weight.T + bias).argmax(1)
    return (pred == test_labels).float().mean().item() * 100


def fit_linear(x: torch.Tensor, target: torch.Tensor, num_outputs: int, steps: int, lr: float,
               weight_decay: float, generator: torch.Generator
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A linear layer fitted by full-batch AdamW on the cross-entropy.

    Args:
        x (Tensor): N x C features. target (Tensor): N class indices or N x num_outputs class
            probabilities. generator: draws the initial weights.

    Returns:
        (weight num_outputs x C, bias num_outputs), detached.
    """
    weight = (torch.randn(num_outputs, x.shape[1], generator=generator) * 0.01)
    weight.requires_grad_()
    bias = torch.zeros(num_outputs, requires_grad=True)
    optimizer = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(x @ weight.T + bias, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return weight.detach(), bias.detach()
