"""Does adding RePre make the features better? A small, honest answer on 2 CPU cores.

Pre-trains a framework (MoCo v3 or DINO, tiny ViT) with and without RePre under identical data,
augmentations, seeds and step counts, two runs at a time with one thread each, then scores every
frozen encoder on:
  - image level: k-NN top-1 (CLS and mean patch token), linear-probe top-1;
  - pixel level (RePre's claim): a dense linear probe of the patch tokens on mosaics of test
    items (mIoU, pixel accuracy; final norm and a middle block), see
    repre_mm/evaluation/dense_probe.py;
  - RePre runs: PSNR of the reconstructions of the test images.
References beside them: raw pixels and the untrained encoder. Comparisons are paired by seed:
mean difference, 95 % Student-t interval over the seeds and a verdict. ``baseline_equal_compute``
trains the baseline for as many more iterations as RePre's measured extra time buys.

    python tools/benchmarks/small_scale.py                 # default (3 seeds, ~30 min, 2 cores)
    python tools/benchmarks/small_scale.py --quick         # < 3 min, for tests
    python tools/benchmarks/small_scale.py --data PATH     # PATH/{train,test}/<class>/*

The benchmark lives in repre_mm/benchmarks/small_scale.py (on the shared core of
repre_mm/benchmarks/: runs, statistics, data adaptation). The mosaic dense probe's scores are
reported as a diagnostic only: at this size it cannot tell a trained encoder from an untrained
one (docs/results/study.md).

Writes <out>/results.json, <out>/results.md and <out>/reconstructions.png; each run's exact
config under <out>/configs/ (an ordinary mmpretrain config: tools/train.py trains it as it is).
A run whose checkpoint exists with an identical config is reused, not trained again, and its
scores (<run>/scores.json, keyed by the checkpoint and the evaluation settings) are not computed
again.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import repre_mm  # noqa: E402,F401,I001  (compat patches first)
from repre_mm.benchmarks.small_scale import main  # noqa: E402

if __name__ == '__main__':
    main()
