"""Helpers for the bench scripts: timing with warm-up, peak memory."""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time


def timeit(fn, repeat: int = 5, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4)}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)


def report(out: dict, device=None) -> None:
    """Add peak memory, print a readable table and a final JSON line."""
    if device is not None and getattr(device, "type", "") == "cuda":
        import torch

        out["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out["peak_rss_mib"] = peak_rss_mib()
    for k, v in out.items():
        print(f"{k:36s} {v}")
    print(json.dumps(out))
