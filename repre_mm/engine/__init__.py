from .knn_hook import KNNEvaluationHook
from .optim_wrappers import BF16AutocastOptimWrapper

__all__ = ['BF16AutocastOptimWrapper', 'KNNEvaluationHook']
