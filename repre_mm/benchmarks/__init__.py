"""The benchmarks' shared core: jobs run two at a time and reused when done (``runs``), paired
statistics over seeds (``stats``), pre-training runs adapted to the data (``pretrain``); and the
benchmarks built on it (``small_scale``, ``seg_transfer``). The scripts in tools/benchmarks/ are
their command lines. Imported on demand, not by ``import repre_mm``."""
