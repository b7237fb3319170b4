from .health_hook import TrainHealthHook
from .knn_hook import KNNEvaluationHook
from .non_finite_hook import NonFiniteLossHook
from .optim_wrappers import BackboneLayerDecayOptimWrapperConstructor, BF16AutocastOptimWrapper
from .random_state_hook import RandomStateCheckpointHook
from .strict_pretrained import CheckedPretrainedInit

__all__ = [
    'BackboneLayerDecayOptimWrapperConstructor', 'BF16AutocastOptimWrapper',
    'CheckedPretrainedInit', 'KNNEvaluationHook', 'NonFiniteLossHook', 'RandomStateCheckpointHook',
    'TrainHealthHook'
]
