"""Running a benchmark's jobs: tools/train.py (or test.py) processes, two at a time, reused when
already done, stopped together when one fails.

A job is a command in a work directory. ``Job.prepare`` is called when the job is about to
start (it may depend on jobs that finished before, e.g. the equal-compute baseline's length):
it writes what the job needs and returns the command, or None when the job's result already
exists (a restarted benchmark reuses finished work).
"""
import json
import os
import os.path as osp
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ..utils.resources import import_root, shipped_tool

WALL_FILE = 'train_wall_s.json'  # a finished job's wall clock, kept for when it is reused


@dataclass
class Job:
    """One process of a benchmark.

    Args:
        name (str): unique; the log is ``<out>/<name>.log``.
        work_dir (str): where the job writes (its wall clock is kept there).
        prepare (Callable[[], Optional[List[str]]]): returns the command (argv), or None when
            the job's result exists already.
        total_iters (int | Callable, optional): iterations, for the progress line.
        env (dict, optional): environment variables the command needs besides
            :func:`job_env`'s.
        after (Sequence[str]): names of earlier jobs that must have finished before this one
            starts; meanwhile later jobs that are ready take the free cores.
    """
    name: str
    work_dir: str
    prepare: Callable[[], Optional[List[str]]]
    total_iters: object = None
    env: Optional[Dict[str, str]] = None
    after: Sequence[str] = ()


def read_json(path: str, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return default


def write_json(path: str, obj) -> None:
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=2)


def job_env(threads: int = 1) -> Dict[str, str]:
    """The environment of a job: ``threads`` threads, this very repre_mm importable."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                PYTHONUNBUFFERED='1',
                PYTHONPATH=import_root() + os.pathsep + os.environ.get('PYTHONPATH', ''))


def tool(name: str) -> List[str]:
    """argv prefix of one of the shipped tools, e.g. ``tool('train.py')``."""
    return [sys.executable, shipped_tool(name)]


def run_jobs(jobs: Sequence[Job], out: str, parallel: int = 2) -> Dict[str, Optional[float]]:
    """Runs ``jobs``, ``parallel`` at a time. When one fails, the others are stopped (they would
    keep the cores busy for nothing) and the error names the failed job's log.

    Jobs start in the order given, except that a job waits for the jobs it names in ``after``.

    Returns:
        {name: wall seconds} in the order of ``jobs`` (a reused job's recorded wall clock, None
        if it was not recorded).
    """
    check_order(jobs)
    queue, running, done = list(jobs), {}, {}
    start, last_report = time.time(), 0.0
    os.makedirs(out, exist_ok=True)
    try:
        while queue or running:
            start_ready(queue, running, done, out, parallel)
            collect_finished(running, done, pending=len(queue))
            if running and time.time() - last_report > 30:
                last_report = time.time()
                timed = [w for w in done.values() if w]
                print(f'[run] {time.time() - start:.0f} s elapsed; ' + '; '.join(
                    f'{name}: {progress(job.work_dir, total)}'
                    for name, (_, _, _, job, total) in running.items()) +
                    (f'; ETA {eta(timed, running, queue, parallel):.0f} s' if timed else ''))
            time.sleep(0.5)
    finally:
        for name, (proc, _, log, _, _) in running.items():  # after a failure or Ctrl-C
            stop(proc)
            log.close()
            print(f'[run] stopped {name}')
    return {job.name: done[job.name] for job in jobs}  # in the order asked: stable tables


def check_order(jobs: Sequence[Job]) -> None:
    """A job may wait only for jobs listed before it: anything else would never start."""
    earlier = set()
    for job in jobs:
        missing = [name for name in job.after if name not in earlier]
        if missing:
            raise ValueError(f'job {job.name} waits for {missing}, which are not jobs listed '
                             f'before it.')
        earlier.add(job.name)


def start_ready(queue: list, running: dict, done: dict, out: str, parallel: int) -> None:
    """Starts queued jobs whose ``after`` jobs are done until ``parallel`` run; a job whose
    ``prepare`` returns None is finished already (its recorded wall clock goes to ``done``)."""
    while len(running) < parallel:
        ready = [job for job in queue if all(name in done for name in job.after)]
        if not ready:
            return
        job = ready[0]
        queue.remove(job)
        cmd = job.prepare()
        if cmd is None:
            print(f'[run] reusing {job.name}')
            done[job.name] = read_json(osp.join(job.work_dir, WALL_FILE), {}).get('wall_s')
            continue
        os.makedirs(job.work_dir, exist_ok=True)
        log = open(osp.join(out, f'{job.name}.log'), 'w')
        total = job.total_iters() if callable(job.total_iters) else job.total_iters
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=dict(job_env(), **(job.env or {})), start_new_session=True)
        running[job.name] = (proc, time.time(), log, job, total)
        print(f'[run] started {job.name}')


def collect_finished(running: dict, done: dict, pending: int) -> None:
    """Moves finished jobs from ``running`` to ``done`` (recording their wall clock); a failed
    job is an error naming its log."""
    for name, (proc, t0, log, job, _) in list(running.items()):
        if proc.poll() is None:
            continue
        log.close()
        del running[name]
        if proc.returncode != 0:
            raise RuntimeError(f'{name} failed (exit {proc.returncode}); see {log.name}')
        done[name] = time.time() - t0
        write_json(osp.join(job.work_dir, WALL_FILE), dict(wall_s=done[name]))
        print(f'[run] finished {name} in {done[name]:.0f} s '
              f'({len(done)}/{len(done) + len(running) + pending})')


def stop(proc: subprocess.Popen) -> None:
    """Ends a job and the processes it started (its own session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def eta(timed, running, queue, parallel) -> float:
    per_job = statistics.mean(timed)
    left = len(queue) * per_job + sum(max(per_job - (time.time() - t0), 0)
                                      for _, t0, _, _, _ in running.values())
    return left / parallel


def progress(work_dir: str, total: Optional[int]) -> str:
    """'iteration i/total, eta' from the scalars mmengine logs to vis_data/scalars.json."""
    try:
        records = train_records(work_dir)
    except (FileNotFoundError, ValueError):
        records = []
    if not records:
        return 'starting'
    done = records[-1]['iter']
    if not total:
        return f'iteration {done}'
    left = statistics.median(r['time'] for r in records[-10:]) * max(total - done, 0)
    return f'iteration {done}/{total}, eta {left / 60:.1f} min'


def train_records(work_dir: str) -> List[dict]:
    """The logged training scalars (mmengine's vis_data/scalars.json) of the newest run in
    ``work_dir`` that logged any."""
    runs = sorted(d for d in os.listdir(work_dir) if osp.isdir(osp.join(work_dir, d)))
    for run in reversed(runs):
        path = osp.join(work_dir, run, 'vis_data', 'scalars.json')
        if osp.exists(path):
            with open(path) as f:
                return [r for r in map(json.loads, f) if 'loss' in r]
    raise FileNotFoundError(f'no vis_data/scalars.json under {work_dir}.')


def checkpoint_of(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's ``last_checkpoint`` pointer names, if it exists."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.exists(pointer):
        return None
    with open(pointer) as f:
        path = f.read().strip()
    return path if osp.exists(path) else None


def trained_iterations(work_dir: str) -> int:
    """Iterations a finished run trained: its checkpoint's ``meta.iter``. Not the last logged
    iteration, which lags by up to the logging interval."""
    from ..utils.checkpoint import load_checkpoint_meta
    checkpoint = checkpoint_of(work_dir)
    if checkpoint is None:
        raise FileNotFoundError(f'{work_dir} holds no finished run (no last_checkpoint).')
    meta = load_checkpoint_meta(checkpoint)
    if 'iter' not in meta:
        raise KeyError(f'{checkpoint} has no meta.iter: not a checkpoint of mmengine\'s Runner.')
    return int(meta['iter'])


def iteration_time(work_dir: str) -> float:
    """Median seconds per logged training iteration."""
    return statistics.median(r['time'] for r in train_records(work_dir))


def equal_compute_iters(baseline_dirs: Sequence[str], repre_dirs: Sequence[str]):
    """Iterations the baseline gets for RePre's wall clock: the iterations the baseline trained
    x the measured time ratio RePre / baseline per iteration (median over the paired runs).

    Returns:
        (iterations, ratio)
    """
    ratios = [iteration_time(r) / iteration_time(b) for b, r in zip(baseline_dirs, repre_dirs)]
    ratio = statistics.median(ratios)
    iters = trained_iterations(baseline_dirs[0])
    return max(iters, round(iters * ratio)), ratio


def stored_or_computed(path: str, key: dict, compute: Callable[[], dict], what: str) -> dict:
    """The scores stored at ``path`` under ``key``, else ``compute()`` (then stored): finished
    runs are not evaluated again when a benchmark is restarted."""
    stored = read_json(path, {})
    if stored.get('key') == key:
        print(f'[eval] reusing the stored scores of {what} ({path})')
        return stored['scores']
    scores = compute()
    write_json(path, dict(key=key, scores=scores))
    return scores


def file_key(path: str) -> list:
    """What identifies a file's content cheaply: path, size, modification time."""
    stat = os.stat(path)
    return [osp.abspath(path), stat.st_size, stat.st_mtime_ns]
