"""Lab runs in parallel worker processes: ``visent study``'s grid and ``visent demo``'s five RL runs.

Each worker is a spawned process with one torch thread (a tiny model gains little from a second thread,
and two processes use two cores fully); with one worker the jobs run in this process, which saves
the ~10 s of torch/transformers/TRL imports a spawned worker pays.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["RunDirBusy", "exclusive_dir", "exit_with_parent", "init_worker", "pool_map", "workers"]


class RunDirBusy(RuntimeError):
    """Another process is running in this run folder."""


@contextlib.contextmanager
def exclusive_dir(path: str) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``path`` (created if absent) for the block.

    Two processes training into one folder interleave their metrics and overwrite each other's model and
    result without an error (two ``visent study`` on one ``--out``, or workers orphaned by a killed study),
    so the second is refused with :class:`RunDirBusy`. The lock is the OS's (``flock``): it goes with the
    process, a crash leaves nothing to clean up. Where ``fcntl`` is missing (Windows) nothing is locked.
    """
    os.makedirs(path, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    with open(os.path.join(path, ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusy(f"{path} is in use by another process (a second visent study on this folder?)") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def exit_with_parent(poll_s: float = 1.0) -> None:
    """End this process when its parent does. A pool worker whose study was killed (``kill`` on the study's
    pid, not Ctrl-C on its process group) would otherwise finish the runs already queued to it, unseen."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def init_worker() -> None:
    """One torch thread and quiet libraries (runs at the start of every worker process); the worker ends
    with its parent."""
    exit_with_parent()
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
