"""Write the encoder of a pre-training checkpoint alone (mmpretrain backbone format).

    python tools/model_converters/extract_backbone.py work_dirs/repre/epoch_300.pth backbone.pth

Keeps ``backbone.*`` (the online encoder), strips the prefix, and drops everything else (the
RePre decoder, neck, heads, the momentum encoder), saying what it dropped. The result loads into
``mmpretrain.VisionTransformer`` / ``MoCoV3ViT`` with zero missing keys, e.g. through
``init_cfg=dict(type='Pretrained', checkpoint='backbone.pth')``. Other layouts (timm, mmseg):
``vit_layouts.py`` beside this file.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from vit_layouts import convert_file  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='pre-training checkpoint')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.', help='the encoder\'s key prefix')
    args = parser.parse_args()
    convert_file(args.src, args.dst, 'bare', args.prefix)


if __name__ == '__main__':
    main()
