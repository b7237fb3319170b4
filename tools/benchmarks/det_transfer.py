"""Detection transfer on real photos: Mask R-CNN through mmdet, RePre vs its base.

    python tools/benchmarks/seg_transfer.py --data data/camvid --out work_dirs/camvid  # encoders
    python tools/benchmarks/det_transfer.py --data data/horse \
        --pretrained work_dirs/camvid/pretrain --out work_dirs/horse
    python tools/benchmarks/det_transfer.py --data ROOT --checkpoints baseline=A.pth repre=B.pth
    python tools/benchmarks/det_transfer.py --data ROOT --pretrained DIR --quick   # < 3 min, tests

ROOT is any COCO-format instance dataset: annotations/instances_{train,test}.json and the images
under images/ (or at file_name relative to ROOT); tools/dataset_converters/masks_to_coco.py
writes the JSONs from mask PNGs. Nothing is pre-trained here: the encoders are a seg_transfer
run's (--pretrained <its out>/pretrain: baseline, RePre, equal-compute baseline, per seed) or
given checkpoints. Each is fine-tuned as Mask R-CNN with a simple feature pyramid, derived from
the shipped ViT-S/16 config and shrunk to the CPU (tools/benchmarks/transfer.sh: export, strict
loading, tools/train.py, tools/test.py), against the same fine-tuning from random weights and
the baseline before fine-tuning (0 iterations). Box and mask AP of the test split (mmdet's
CocoMetric), paired differences with 95 % intervals and verdicts go to <out>/results.md and
results.json, a picture of test predictions to <out>/predictions.png. A restart reuses finished
runs.

The benchmark lives in repre_mm/benchmarks/det_transfer.py, on the shared core of
repre_mm/benchmarks/ (runs, statistics) and seg_transfer's encoder handling.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import repre_mm  # noqa: E402,F401,I001  (compat patches first)
from repre_mm.benchmarks.det_transfer import main  # noqa: E402

if __name__ == '__main__':
    main()
