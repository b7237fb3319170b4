from .atomic_checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend
from .health_hook import TrainHealthHook
from .initial_weights_hook import InitialWeightsHook
from .knn_hook import KNNEvaluationHook
from .non_finite_hook import NonFiniteLossHook
from .optim_wrappers import (BackboneLayerDecayOptimWrapperConstructor, BF16AutocastOptimWrapper,
                             PlainParamGroupsOptimWrapperConstructor)
from .random_state_hook import RandomStateCheckpointHook
from .reconstruction_vis_hook import ReconstructionVisualizationHook
from .strict_pretrained import CheckedPretrainedInit

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend',
    'BackboneLayerDecayOptimWrapperConstructor', 'BF16AutocastOptimWrapper',
    'CheckedPretrainedInit', 'InitialWeightsHook', 'KNNEvaluationHook', 'NonFiniteLossHook',
    'PlainParamGroupsOptimWrapperConstructor', 'RandomStateCheckpointHook',
    'ReconstructionVisualizationHook', 'TrainHealthHook'
]
