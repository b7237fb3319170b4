"""Settings chosen on validation data, never on test: ``--select OPTION=V1,V2 ...``.

Each combination of the candidate values fine-tunes the baseline encoder of the first seed on
the training part and is scored on the validation split (a candidate pre-training length,
``epochs``, first pre-trains that encoder so long: in benchmarks that pre-train); the
combination with the highest validation score is then used for every run the report scores
on test. ``selection.json`` / ``selection.md`` under ``--out`` say which candidate won, on
which numbers, and that those numbers are validation numbers.
"""
import argparse
import dataclasses
import itertools
import os.path as osp
from typing import Callable, Dict, List, Optional

from .pretrain import run_name
from .runs import read_json, run_jobs, write_json
from .transfer import finetune_jobs

# the options --select may set (argparse dest: type): fine-tuning settings, and the
# pre-training length where the benchmark pre-trains its encoders
SELECTABLE = {'finetune_lr': float, 'finetune_iters': int}
PRETRAINING_SELECTABLE = {'epochs': int}


def selectable(pretrains: bool) -> Dict[str, type]:
    """What --select may set; ``pretrains``: the benchmark pre-trains its encoders."""
    return dict(SELECTABLE, **(PRETRAINING_SELECTABLE if pretrains else {}))


def add_selection_args(parser, pretrains: bool = False) -> None:
    group = parser.add_argument_group('choosing on validation (never on test)')
    group.add_argument('--val-fraction', type=float, metavar='F',
                       help='carve this fraction of the training images (fixed seed) as the '
                       'validation split; fine-tuning trains on the rest. Default: the '
                       "dataset's own validation split where it has one")
    group.add_argument('--select', nargs='+', metavar='OPTION=V1,V2',
                       help='candidate settings (' + ', '.join(selectable(pretrains)) + '): every '
                       'combination fine-tunes the baseline of the first seed (pre-trained '
                       'for each candidate epochs) and is scored on validation; the best is '
                       'used for the test runs (selection.json / .md say which and why)')


def check_selection_args(parser, args, pretrains: bool = False) -> None:
    """Checks --val-fraction and sets ``args.candidates`` (None without --select)."""
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        parser.error(f'--val-fraction {args.val_fraction}: give a fraction between 0 and 1.')
    args.candidates = (parse_select(parser, args.select, selectable(pretrains)) if args.select
                       else None)


def selects_pretraining(args) -> bool:
    """Whether a --select candidate sets a pre-training option (it must run before the
    benchmark's own pre-training, which then uses the winner)."""
    return any(name in PRETRAINING_SELECTABLE for c in args.candidates or () for name in c)


def parse_select(parser, items: List[str], allowed: Dict[str, type] = SELECTABLE
                 ) -> List[Dict[str, object]]:
    """The candidate combinations of ``--select`` items, in the order given."""
    options = {}
    for item in items:
        name, _, values = item.partition('=')
        name = name.strip().replace('-', '_')
        if name not in allowed or not values:
            also = (f' ({name} only where the benchmark pre-trains its encoders)'
                    if name in PRETRAINING_SELECTABLE else '')
            parser.error(f'--select {item}: give OPTION=V1,V2 with OPTION one of '
                         f'{", ".join(allowed)}{also}.')
        try:
            options[name] = [allowed[name](v) for v in values.split(',')]
        except ValueError:
            parser.error(f'--select {item}: the values of {name} must be '
                         f'{allowed[name].__name__}s.')
    return [dict(zip(options, combo)) for combo in itertools.product(*options.values())]


def choose(candidates: List[Dict[str, object]], scores: List[float], metric: str,
           split_name: str) -> dict:
    """The selection record: every candidate with its validation score, the winner (the highest
    score; the first of equal ones) and why."""
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    others = ', '.join(f'{_text(c)}: {s:.2f}' for i, (c, s) in
                       enumerate(zip(candidates, scores)) if i != best)
    return dict(metric=metric, split=split_name,
                candidates=[dict(settings=c, score=s) for c, s in zip(candidates, scores)],
                winner=candidates[best],
                why=f'highest {metric} on the {split_name} split: {scores[best]:.2f} '
                    f'({_text(candidates[best])}) against {others or "no other candidate"}')


def select_on_validation(args, runs: Optional[Dict[str, List[tuple]]],
                         validation_config: Callable[[argparse.Namespace], Callable],
                         score_of: Callable[[dict], float], metric: str,
                         encoders_of: Optional[Callable[[dict], Dict[str, List[tuple]]]] = None
                         ) -> Optional[dict]:
    """``--select``: each candidate fine-tunes the first seed's baseline (the first method of
    --checkpoints) on the training part under <out>/select/candidate<i>/ and is scored on the
    validation split; the winner's settings are then set on ``args`` for every run scored on
    test. Returns the selection record (None without --select).

    Args:
        runs: {method: [(config, checkpoint) per seed]}, the benchmark's encoders; or None
            with ``encoders_of``: ``(candidate) -> {method: [(config, checkpoint)]}``, the
            encoder a candidate fine-tunes (one that sets the pre-training length).
        validation_config: ``(candidate's args) -> write_config`` for
            :func:`~.transfer.finetune_jobs`, a config that trains on the training part and is
            tested on the validation split.
        score_of: the candidate's score from its tools/test.py metrics.json.
        metric: the score's name in the record.
    """
    if not args.candidates:
        return None
    if encoders_of is None:
        method = 'baseline' if 'baseline' in runs else next(iter(runs))
        encoders_of = lambda candidate: {method: runs[method][:1]}  # noqa: E731
    jobs, metrics = [], []
    for i, candidate in enumerate(args.candidates):
        candidate_args = argparse.Namespace(
            **dict(vars(args), **candidate, out=osp.join(args.out, 'select', f'candidate{i}')))
        encoder = encoders_of(candidate)
        (method, ) = encoder
        candidate_jobs, where = finetune_jobs(candidate_args, encoder,
                                              validation_config(candidate_args),
                                              args.first_seed, with_untrained=False)
        jobs += [dataclasses.replace(job, name=f'candidate{i}_{job.name}')
                 for job in candidate_jobs]
        metrics += list(where.values())
    run_jobs(jobs, osp.join(args.out, 'select'), args.jobs)
    scores = []
    for path in metrics:
        found = read_json(path)
        if found is None:
            raise RuntimeError(f'{path} is missing: a --select candidate wrote no metrics (see '
                               f'its log under {args.out}/select).')
        scores.append(score_of(found))
    record = choose(args.candidates, scores, metric, 'validation')
    record['encoder'] = run_name(method, args.first_seed)
    for name, value in record['winner'].items():
        setattr(args, name, value)
    return record


def chosen_text(record: Optional[dict]) -> List[str]:
    """The report's first lines: which settings validation chose, on which numbers."""
    if not record:
        return []
    return [f'Chosen on validation ({record["encoder"]}): {_text(record["winner"])}; '
            f'{record["why"]} (selection.md).', '']


def _text(settings: Dict[str, object]) -> str:
    return ', '.join(f'{k} {v}' for k, v in settings.items())


def write_selection(out: str, record: dict, context: str) -> List[str]:
    """<out>/selection.json and .md (``context``: what each candidate ran, on which data);
    returns the lines written."""
    lines = ['Settings chosen on validation (these numbers chose them; none is a test number). '
             + context, '', f'| candidate | {record["metric"]} ({record["split"]}) |',
             '|---|---|']
    lines += [f'| {_text(c["settings"])} | {c["score"]:.2f} |' for c in record['candidates']]
    lines += ['', f'Chosen: {_text(record["winner"])}; {record["why"]}.']
    write_json(osp.join(out, 'selection.json'), record)
    with open(osp.join(out, 'selection.md'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))
    return lines
