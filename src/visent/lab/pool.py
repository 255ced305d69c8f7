"""Lab runs in parallel worker processes: ``visent study``'s grid and ``visent demo``'s five RL runs.

Each worker is a spawned process with one torch thread (a tiny model gains little from a second thread,
and two processes use two cores fully); with one worker the jobs run in this process, which saves
the ~10 s of torch/transformers/TRL imports a spawned worker pays.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["init_worker", "pool_map", "workers"]


def init_worker() -> None:
    """One torch thread and quiet libraries (runs at the start of every worker process)."""
    import torch
    import transformers

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def workers(value: str | int, n_jobs: int, prog: str = "visent study") -> int:
    """Worker count from ``--workers`` (a number or ``auto`` = one per CPU core), at most ``n_jobs``."""
    if value == "auto":
        n = os.cpu_count() or 1
    else:
        try:
            n = int(value)
        except ValueError:
            raise SystemExit(f"{prog}: --workers must be a number or 'auto', got {value!r}") from None
        if n < 1:
            raise SystemExit(f"{prog}: --workers must be >= 1")
    return max(1, min(n, n_jobs))


def pool_map(
    fn: Callable[[dict[str, Any]], Any],
    jobs: Sequence[dict[str, Any]],
    n_workers: int,
    done: Callable[[dict[str, Any], Callable[[], Any]], None],
    *,
    init: bool = True,
) -> int:
    """Run ``fn`` over ``jobs`` (in-process for one worker), calling ``done(job, get_result)``; returns failures.

    ``init``: call ``init_worker`` in-process too (the demo sets its own thread count and skips it).
    """
    failures = 0

    def call(job, get):
        nonlocal failures
        try:
            done(job, get)
        except Exception as e:  # noqa: BLE001 (one broken run must not lose the others' results)
            failures += 1
            print(f"   {job.get('name', '?')}: FAILED: {type(e).__name__}: {e}", flush=True)

    if n_workers <= 1:
        if init:
            init_worker()
        for job in jobs:
            call(job, lambda job=job: fn(job))
        return failures
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn"), initializer=init_worker) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for fut in as_completed(futures):
            call(futures[fut], fut.result)
    return failures
