from .dino import DINO, DINODistillationHead, DINOProjector, DINOTeacherTempHook
from .fusion_decoder import MultiLevelFusionDecoder
from .level_taps import EncoderCall, LevelTap, SwinLevelTap, ViTLevelTap, build_level_tap
from .reconstruction_head import RePreReconstructionHead
from .repre import RePre

__all__ = [
    'RePre', 'MultiLevelFusionDecoder', 'RePreReconstructionHead', 'LevelTap', 'ViTLevelTap',
    'SwinLevelTap', 'EncoderCall', 'build_level_tap', 'DINO', 'DINOProjector',
    'DINODistillationHead', 'DINOTeacherTempHook'
]
