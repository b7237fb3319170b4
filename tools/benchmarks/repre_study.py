"""The RePre study: a longer small-scale schedule, every variant screened, the best two confirmed.

    python tools/benchmarks/repre_study.py --out work_dirs/study      # ~1.5 h on 2 cores

1. baseline, RePre (shipped recipe) and the equal-compute baseline with 3 seeds;
2. every RePre variant (tools/benchmarks/small_scale.py VARIANTS) with 1 seed (seed 0);
3. the two variants with the best screening score, seed 0, (dense mIoU + k-NN CLS) minus the
   baseline's, trained on seeds 1 and 2 as well;
4. one table of every run, the paired comparisons with 95 % intervals, and the recipe chosen.

Runs are tools/train.py jobs with configs under <out>/configs/; a finished run is reused when the
study is started again with the same settings.
"""
import json
import os.path as osp
import sys
import time

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import small_scale as ss  # noqa: E402

SCREEN = [m for m in ss.VARIANTS if m != 'repre']
MAIN = ['baseline', 'repre', 'baseline_equal_compute']


def screening_score(results, method):
    """(dense mIoU + k-NN CLS) of ``method`` minus the baseline's, seed 0."""
    run = next(r for r in results if r['method'] == method and r['seed'] == 0)
    base = next(r for r in results if r['method'] == 'baseline' and r['seed'] == 0)
    return (run['dense_miou'] - base['dense_miou']) + (run['knn_cls'] - base['knn_cls'])


def main():
    parser = ss.build_parser()
    parser.set_defaults(epochs=12, out='work_dirs/study')
    parser.add_argument('--confirm', type=int, default=2, help='variants confirmed on 3 seeds')
    parser.add_argument('--screen', nargs='+', default=SCREEN, choices=SCREEN)
    args = parser.parse_args()
    args.quick = False
    sys.stdout.reconfigure(line_buffering=True)
    ss.quiet_mmengine()
    ss.init_default_scope('mmpretrain')
    t_start = time.time()
    data = ss.prepare_data(args)
    seeds = list(range(args.seeds))

    print(f'[study] phase 1: {MAIN} x {len(seeds)} seeds, {args.screen} x seed 0')
    equal = {}

    def equal_compute_iters():
        # once, when the first equal-compute run starts: every baseline / RePre run has finished
        if not equal:
            equal['iters'], equal['time_ratio'] = ss.equal_compute_iters(args, seeds)
            print(f'[study] RePre / baseline time per iteration {equal["time_ratio"]:.3f}: the '
                  f'equal-compute baseline trains {equal["iters"]} iterations')
        return equal['iters']

    # one queue, two runs at a time: the main runs, the screened variants, then the
    # equal-compute baselines (timed against the finished main runs)
    queue = [(m, s, None) for s in seeds for m in ('baseline', 'repre')]
    queue += [(m, 0, None) for m in args.screen]
    queue += [('baseline_equal_compute', s, equal_compute_iters) for s in seeds]
    walls = ss.train_all(args, queue, data)
    extra = dict(equal)
    base_cfg = osp.join(args.out, 'configs', 'baseline_seed0.py')
    results, references, picture = ss.evaluate_runs(args, data, walls, base_cfg)

    scores = {m: screening_score(results, m) for m in args.screen}
    confirmed = sorted(scores, key=scores.get, reverse=True)[:args.confirm]
    print('[study] screening (dense mIoU + k-NN CLS, minus baseline, seed 0): ' + ', '.join(
        f'{m} {s:+.2f}' for m, s in sorted(scores.items(), key=lambda x: -x[1])))
    finish(args, data, results, references, picture, extra, scores, [], t_start)
    if confirmed:  # phase 2; a study stopped here keeps the phase-1 summary above
        print(f'[study] phase 2: {confirmed} on seeds {seeds[1:]}')
        more = ss.train_all(args, [(m, s, None) for s in seeds[1:] for m in confirmed], data)
        results += ss.evaluate_runs(args, data, more, base_cfg)[0]
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
