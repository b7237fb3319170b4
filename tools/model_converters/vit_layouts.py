"""Convert the ViT encoder of a pre-training checkpoint to other code bases' key layouts.

    python tools/model_converters/vit_layouts.py CKPT OUT --to timm        # timm VisionTransformer
    python tools/model_converters/vit_layouts.py CKPT OUT --to mmseg       # mmseg VisionTransformer
    python tools/model_converters/vit_layouts.py CKPT OUT --to mmpretrain  # backbone.* (mmdet /
                                                      # mmseg configs here load it, prefix kept)
    python tools/model_converters/vit_layouts.py CKPT OUT --to bare        # prefix stripped
                                                      # (what extract_backbone.py writes)

Input: an mmengine checkpoint of RePre or its baseline (``backbone.*`` is the online encoder, an
mmpretrain VisionTransformer / MoCoV3ViT). Loading uses ``weights_only=True``. Every backbone key
must map to exactly one output key: otherwise nothing is written. The dropped top-level modules
(decoder, neck, heads, momentum encoder) are listed.

timm: the layout of ``vit_small_patch16_224`` / ``vit_base_patch16_224``. Build the timm model
with the encoder's head count (MoCo v3's ViT-S has 12 heads, timm's vit_small 6).
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import Counter

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from repre_mm.utils.checkpoint import load_weights  # noqa: E402

# (pattern on the mmpretrain key without 'backbone.', replacement); first match wins.
TIMM_RULES = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.qkv\.', r'blocks.\1.attn.qkv.'),
    (r'^layers\.(\d+)\.attn\.proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
    (r'^(cls_token|pos_embed)$', r'\1'),
]
MMSEG_RULES = [
    (r'^patch_embed\.projection\.', 'patch_embed.projection.'),
    (r'^layers\.(\d+)\.attn\.qkv\.weight$', r'layers.\1.attn.attn.in_proj_weight'),
    (r'^layers\.(\d+)\.attn\.qkv\.bias$', r'layers.\1.attn.attn.in_proj_bias'),
    (r'^layers\.(\d+)\.attn\.proj\.', r'layers.\1.attn.attn.out_proj.'),
    (r'^layers\.(\d+)\.(ln1|ln2|ffn\.layers\.0\.0|ffn\.layers\.1)\.', r'layers.\1.\2.'),
    (r'^ln1\.', 'ln1.'),
    (r'^(cls_token|pos_embed)$', r'\1'),
]
MMPRETRAIN_RULES = [(r'^(.*)$', r'backbone.\1')]
BARE_RULES = [(r'^(.*)$', r'\1')]  # the backbone's own keys: extract_backbone.py
LAYOUTS = dict(timm=TIMM_RULES, mmseg=MMSEG_RULES, mmpretrain=MMPRETRAIN_RULES, bare=BARE_RULES)


def convert(state_dict, to, prefix='backbone.'):
    """Returns (converted backbone state dict, {dropped top-level name: count}); raises KeyError
    listing the backbone keys no rule maps."""
    rules = LAYOUTS[to]
    backbone = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not backbone:
        raise KeyError(f'no key starts with {prefix!r}; top-level names: '
                       f'{sorted({k.split(".")[0] for k in state_dict})}')
    out, unmatched = {}, []
    for key, value in backbone.items():
        for pattern, replacement in rules:
            if re.search(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise KeyError(f'{len(unmatched)} backbone keys have no {to} counterpart: {unmatched}. '
                       f'Nothing was written.')
    dropped = Counter(k.split('.')[0] for k in state_dict if not k.startswith(prefix))
    return out, dict(dropped)


def convert_file(src: str, dst: str, to: str, prefix: str = 'backbone.') -> None:
    """Load ``src`` (weights only), convert, write ``dst`` atomically, say what was dropped."""
    out, dropped = convert(load_weights(src), to, prefix)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    tmp = dst + '.tmp'
    # timm loads a bare state dict; mmengine's loaders take either form
    torch.save(out if to == 'timm' else dict(state_dict=out, meta=dict(source=osp.abspath(src))),
               tmp)
    os.replace(tmp, dst)  # never a truncated file under the final name
    print(f'wrote {len(out)} tensors ({sum(v.numel() for v in out.values()) / 1e6:.2f} M values) '
          f'in {to} layout -> {dst}')
    print('dropped: ' + (', '.join(f'{name} ({n} tensors)' for name, n in sorted(
        dropped.items())) or 'nothing'))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='pre-training checkpoint')
    parser.add_argument('dst', help='output file')
    parser.add_argument('--to', required=True, choices=sorted(LAYOUTS))
    args = parser.parse_args()
    convert_file(args.src, args.dst, args.to)


if __name__ == '__main__':
    main()
