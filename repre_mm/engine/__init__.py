from .knn_hook import KNNEvaluationHook
from .non_finite_hook import NonFiniteLossHook
from .optim_wrappers import BF16AutocastOptimWrapper
from .random_state_hook import RandomStateCheckpointHook
from .strict_pretrained import CheckedPretrainedInit

__all__ = [
    'BF16AutocastOptimWrapper', 'KNNEvaluationHook', 'NonFiniteLossHook', 'CheckedPretrainedInit',
    'RandomStateCheckpointHook'
]
