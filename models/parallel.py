"""Data builds over worker processes: one thread each, progress as they go.

On a many-core machine each forked worker would otherwise start a BLAS/OpenMP pool as wide as
the machine (16 workers x 16 threads), and a build that needs ~3 min printed nothing in 10
(a 16-core GPU machine, models/cards/images.md)."""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable


def one_thread() -> None:
    """Pin this (worker) process to one torch and one BLAS/OpenMP thread."""
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # numpy's BLAS keeps its default; the procedural world barely uses it
        pass


def parallel_map(fn: Callable, jobs: list, workers: int, chunksize: int = 16, label: str = "items",
                 report_every: int = 500) -> list:
    """[fn(job) for job in jobs] over `workers` processes (in order), printing progress every
    `report_every` results."""
    def reported(results: Iterable) -> list:
        out, t0 = [], time.time()
        for item in results:
            out.append(item)
            if len(out) % report_every == 0 and len(out) < len(jobs):
                print(f"  {label}: {len(out)}/{len(jobs)} in {time.time() - t0:.0f}s", flush=True)
        return out

    if workers <= 1:
        return reported(map(fn, jobs))
    with ProcessPoolExecutor(workers, initializer=one_thread) as ex:
        return reported(ex.map(fn, jobs, chunksize=chunksize))
