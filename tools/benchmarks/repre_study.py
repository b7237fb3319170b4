"""The RePre study: a longer small-scale schedule, every variant screened, the best confirmed on
fresh seeds.

    python tools/benchmarks/repre_study.py --out work_dirs/study      # ~2 h on 2 cores

1. baseline, RePre (shipped recipe) and the equal-compute baseline with 3 seeds (0, 1, 2);
2. every RePre variant (repre_mm/benchmarks/pretrain.py VARIANTS) on seed 0;
3. the variants with the best screening score on seed 0 (k-NN CLS + linear CLS, minus the
   baseline's) are confirmed on fresh seeds only (1 .. --confirm-seeds; the baseline is trained
   on any it lacks): picking on seed 0 and then counting seed 0 again would bias the interval
   towards the winners. Their seed-0 runs are reported as ``<variant>_screen``;
4. one table of every run, the paired comparisons with 95 % intervals, and the recipe chosen.

Runs are tools/train.py jobs with configs under <out>/configs/; a finished run is reused when the
study is started again with the same settings.
"""
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
import repre_mm  # noqa: E402,F401,I001  (compat patches first)
from mmengine.registry import init_default_scope  # noqa: E402

from repre_mm.benchmarks import small_scale as ss  # noqa: E402
from repre_mm.benchmarks.pretrain import (EQUAL_COMPUTE, VARIANTS,  # noqa: E402
                                          equal_compute_schedule, run_pretraining)

SCREEN = [m for m in VARIANTS if m != 'repre']
MAIN = ['baseline', 'repre', EQUAL_COMPUTE]
# the dense mosaic probe cannot tell trained from untrained encoders: not used to choose
SCREEN_METRICS = ('knn_cls', 'linear_cls')


def screening_score(results, method):
    """(k-NN CLS + linear CLS) of ``method`` minus the baseline's, seed 0."""
    run = next(r for r in results if r['method'] == method and r['seed'] == 0)
    base = next(r for r in results if r['method'] == 'baseline' and r['seed'] == 0)
    return sum(run[m] - base[m] for m in SCREEN_METRICS)


def main():
    parser = ss.build_parser()
    parser.set_defaults(epochs=12, out='work_dirs/study')
    parser.add_argument('--confirm', type=int, default=2, help='variants confirmed')
    parser.add_argument('--confirm-seeds', type=int, default=3,
                        help='fresh seeds (1..N) the confirmed variants are compared on')
    parser.add_argument('--screen', nargs='+', default=SCREEN, choices=SCREEN)
    args = parser.parse_args()
    args.quick = False
    sys.stdout.reconfigure(line_buffering=True)
    ss.quiet_mmengine()
    init_default_scope('mmpretrain')
    t_start = time.time()
    data = ss.prepare_data(args)
    seeds = list(range(args.seeds))

    def write_config(method, seed, iters):
        return ss.write_run_config(args, data, method, seed, iters)

    def total(iters):
        return ss.total_iterations(args, data, iters)

    print(f'[study] phase 1: {MAIN} x {len(seeds)} seeds, {args.screen} x seed 0')
    equal_compute_iters, equal = equal_compute_schedule(args.out, seeds)
    # one queue, two runs at a time: the main runs, the equal-compute baselines (each waits for
    # the main runs it is timed against; the screened variants take the free cores meanwhile),
    # then the screened variants
    queue = [(m, s, None) for s in seeds for m in ('baseline', 'repre')]
    queue += [(EQUAL_COMPUTE, s, equal_compute_iters) for s in seeds]
    queue += [(m, 0, None) for m in args.screen]
    walls = run_pretraining(args.out, queue, write_config, args.jobs, total)
    extra = dict(equal)
    base_cfg = osp.join(args.out, 'configs', 'baseline_seed0.py')
    results, references, picture = ss.evaluate_runs(args, data, walls, base_cfg)

    scores = {m: screening_score(results, m) for m in args.screen}
    confirmed = sorted(scores, key=scores.get, reverse=True)[:args.confirm]
    print('[study] screening (k-NN CLS + linear CLS, minus baseline, seed 0): ' + ', '.join(
        f'{m} {s:+.2f}' for m, s in sorted(scores.items(), key=lambda x: -x[1])))
    finish(args, data, results, references, picture, extra, scores, [], t_start)
    if confirmed:  # phase 2; a study stopped here keeps the phase-1 summary above
        fresh = list(range(1, 1 + args.confirm_seeds))
        print(f'[study] phase 2: {confirmed} on the fresh seeds {fresh}')
        runs = [(m, s, None) for s in fresh for m in confirmed]
        runs += [('baseline', s, None) for s in fresh if s not in seeds]
        more = run_pretraining(args.out, runs, write_config, args.jobs, total)
        results += ss.evaluate_runs(args, data, more, base_cfg)[0]
        for r in results:  # the selection runs are not evidence for what they selected
            if r['method'] in confirmed and r['seed'] == 0:
                r['method'] += '_screen'
        finish(args, data, results, references, picture, extra, scores, confirmed, t_start)


def finish(args, data, results, references, picture, extra, scores, confirmed, t_start):
    summary = ss.write_summary(args, data, results, references, picture,
                               dict(equal_compute=extra, screening=scores,
                                    confirmed=confirmed), t_start)
    print(ss.headline(summary))
    with open(osp.join(args.out, 'study.json'), 'w') as f:
        json.dump(dict(screening=scores, confirmed=confirmed, equal_compute=extra,
                       total_wall_s=summary['total_wall_s']), f, indent=2)
    print(f'[study] results {osp.join(args.out, "results.md")}')


if __name__ == '__main__':
    main()
