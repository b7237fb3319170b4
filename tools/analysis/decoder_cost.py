"""Parameters and forward FLOPs of the encoder and the RePre decoder, per view.

    python tools/analysis/decoder_cost.py [RePre configs ...]   # default: ViT-S/16 and ViT-B/16

FLOPs are multiply-accumulates counted by mmengine's FlopAnalyzer (with a handle for fused
attention), at the config's backbone img_size.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))

import repre_mm  # noqa: E402,F401,I001
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmpretrain.registry import MODELS  # noqa: E402
from repre_mm.utils.flops import count_flops  # noqa: E402
from repre_mm.utils.logging import quiet_mmengine  # noqa: E402

DEFAULTS = [
    'configs/repre/repre_mocov3_vit-small-p16_16xb256-amp-coslr-300e_in1k.py',
    'configs/repre/repre_mocov3_vit-base-p16_16xb256-amp-coslr-300e_in1k.py',
]


def decoder_cost(config_path):
    cfg = Config.fromfile(config_path)
    model = MODELS.build(cfg.model).eval()
    size = cfg.model.framework.backbone.get('img_size', 224)
    image = torch.randn(1, 3, size, size)
    with torch.no_grad(), model.tap.record() as calls:
        model.backbone(image)
    encoder_flops = count_flops(model.backbone, image)
    decoder_flops = count_flops(model.decoder, calls[0].levels)
    return dict(
        config=osp.basename(config_path), img_size=size, levels=list(model.levels),
        encoder_params_m=sum(p.numel() for p in model.backbone.parameters()) / 1e6,
        decoder_params_m=sum(p.numel() for p in model.decoder.parameters()) / 1e6,
        encoder_gflops=encoder_flops / 1e9, decoder_gflops=decoder_flops / 1e9,
        decoder_flops_ratio=decoder_flops / encoder_flops)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('configs', nargs='*', default=DEFAULTS)
    args = parser.parse_args()
    quiet_mmengine()
    for path in args.configs:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                          for k, v in decoder_cost(path).items()}))


if __name__ == '__main__':
    main()
