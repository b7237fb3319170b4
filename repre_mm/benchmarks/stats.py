"""Paired statistics over seeds: the mean difference, its 95 % Student-t interval, a verdict.

The t quantiles come from a table (no scipy at run time): a benchmark has a handful of seeds.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence

# two-sided 95 % Student-t quantiles t(0.975, df), df = 1..30, then 40, 60, 120 and infinity
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))


def t_quantile_95(df: int) -> float:
    """t(0.975, df): the half-width factor of a two-sided 95 % interval (a degrees-of-freedom
    value between table rows takes the next smaller row's, the wider interval)."""
    if df < 1:
        raise ValueError(f'a t interval needs at least 1 degree of freedom (2 seeds); got {df}.')
    if df <= len(_T975):
        return _T975[df - 1]
    value = _T975[-1]
    for row, t in _T975_LARGE:
        if df >= row:
            value = t
    return value if df < 1000 else 1.960


def paired_stats(diffs: Sequence[float], level: float = 0.95) -> Dict:
    """Mean of paired differences (one per seed), its Student-t interval and a verdict: better,
    worse, no measurable difference; with one seed, or with no spread between the seeds'
    differences, no interval (``ci`` None) and a verdict that says why."""
    if level != 0.95:
        raise ValueError(f'only 95 % intervals are tabulated; got level={level}.')
    diffs = list(diffs)
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return dict(per_seed=diffs, mean=mean, ci=None, verdict='one seed: no interval')
    spread = statistics.stdev(diffs)
    if spread == 0:
        # every seed differs by the same amount (a discrete metric on a small test set): a
        # zero-width interval would decide on no evidence of how the difference varies
        return dict(per_seed=diffs, mean=mean, ci=None,
                    verdict=f'no spread over {len(diffs)} seeds: interval not estimable')
    half = t_quantile_95(len(diffs) - 1) * spread / math.sqrt(len(diffs))
    low, high = mean - half, mean + half
    verdict = 'better' if low > 0 else 'worse' if high < 0 else 'no measurable difference'
    return dict(per_seed=diffs, mean=mean, ci=[low, high], verdict=verdict)


def compare(results: List[Dict], method: str, against: str, metrics: Sequence[str]
            ) -> Optional[Dict[str, Dict]]:
    """{metric: paired_stats of ``method`` - ``against``} over the seeds both have; None when
    they share no seed."""
    base = {r['seed']: r for r in results if r['method'] == against}
    runs = [r for r in results if r['method'] == method and r['seed'] in base]
    if not runs:
        return None
    return {m: paired_stats([r[m] - base[r['seed']][m] for r in runs]) for m in metrics
            if all(r.get(m) is not None and base[r['seed']].get(m) is not None for r in runs)}


def fmt(values: Sequence[float]) -> str:
    """'mean ± sd' (sd over seeds), or the single value."""
    values = list(values)
    return f'{statistics.mean(values):.2f}' + (f' ± {statistics.stdev(values):.2f}'
                                               if len(values) > 1 else '')


def comparison_table(comparisons: Dict[str, Dict[str, Dict]], names: Dict[str, str]
                     ) -> List[str]:
    """Markdown rows: per comparison and metric, the per-seed differences, mean, interval and
    verdict. ``names``: metric -> column label (its order is the rows' order)."""
    lines = ['| comparison (paired by seed) | metric | per seed | mean | 95 % interval | verdict |',
             '|---|---|---|---|---|---|']
    for name, diff in comparisons.items():
        for m in names:
            if m not in diff:
                continue
            d = diff[m]
            ci = f'[{d["ci"][0]:+.2f}, {d["ci"][1]:+.2f}]' if d['ci'] else '-'
            lines.append(f'| {name} | {names[m]} | '
                         f'{" / ".join(f"{v:+.2f}" for v in d["per_seed"])} | {d["mean"]:+.2f} | '
                         f'{ci} | {d["verdict"]} |')
    return lines
