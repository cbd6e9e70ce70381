"""Backend service figures: cold start to `hello`, per-request overhead beyond model time,
the throughput of a queue of jobs, and 20 text jobs queued at once (sampled in batches by
the worker) against the same jobs sent one at a time, over a real `python -m backend serve`.

    .venv/bin/python bench/backend.py [--jobs 20]

Overhead = client-observed latency (request written -> result read) minus the job's own
`timings.total`; it covers JSON, the queue hand-off, event writing and pipe transport.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import trimesh  # noqa: E402

from bench.common import report  # noqa: E402
from tests.backend_proc import BackendProcess  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=20)
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="kiln-bench-")
    mesh = os.path.join(tmp, "torus.obj")
    trimesh.creation.torus(major_radius=1.0, minor_radius=0.35).export(mesh)
    out = {}

    cold = []
    for _ in range(3):
        t = time.perf_counter()
        proc = BackendProcess(os.path.join(tmp, "out"))
        proc.send("hello", "h")
        proc.wait_for("h", timeout=120)
        cold.append(time.perf_counter() - t)
        proc.close()
    out["cold_start_to_hello_s"] = round(statistics.median(cold), 3)

    proc = BackendProcess(os.path.join(tmp, "out"))
    job = dict(mesh=mesh, fit_steps=0, resolution=64, preview=False)
    proc.send("encode", "warm", **job)
    proc.wait_for("warm", types=("result",), timeout=300)
    overhead = []
    for i in range(10):
        t = time.perf_counter()
        proc.send("encode", f"o{i}", **job)
        ev = proc.wait_for(f"o{i}", types=("result",), timeout=300)
        overhead.append(time.perf_counter() - t - ev["timings"]["total"])
    out["per_request_overhead_ms"] = round(1000 * statistics.median(overhead), 2)

    t = time.perf_counter()
    for i in range(args.jobs):
        proc.send("encode", f"q{i}", **job)
    totals = [proc.wait_for(f"q{i}", types=("result",), timeout=600)["timings"]["total"] for i in range(args.jobs)]
    wall = time.perf_counter() - t
    out["queue_jobs"] = args.jobs
    out["queue_wall_s"] = round(wall, 3)
    out["queue_jobs_per_min"] = round(60 * args.jobs / wall, 1)
    out["queue_wall_over_sum_of_job_times"] = round(wall / sum(totals), 3)
    # text jobs: queued together (the worker batches their sampling) vs one at a time
    text = dict(resolution=128, preview=False)
    proc.send("generate", "tw", prompt="a red chair", seed=0, **text)
    proc.wait_for("tw", types=("result",), timeout=300)
    prompts = ["a red chair", "a blue car", "a green tree", "a yellow mug", "a white house"]
    t = time.perf_counter()
    for i in range(args.jobs):
        proc.send("generate", f"s{i}", prompt=prompts[i % 5], seed=i, **text)
        proc.wait_for(f"s{i}", types=("result", "error"), timeout=300)
    one_by_one = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(args.jobs):
        proc.send("generate", f"b{i}", prompt=prompts[i % 5], seed=i, **text)
    sizes = [proc.wait_for(f"b{i}", types=("result", "error"), timeout=600).get("batch_size", 1)
             for i in range(args.jobs)]
    queued = time.perf_counter() - t
    out["text_jobs"] = args.jobs
    out["text_one_at_a_time_s"] = round(one_by_one, 3)
    out["text_queued_s"] = round(queued, 3)
    out["text_queued_jobs_per_min"] = round(60 * args.jobs / queued, 1)
    out["text_queued_speedup"] = round(one_by_one / queued, 2)
    out["text_mean_batch_size"] = round(sum(sizes) / len(sizes), 2)
    proc.close()
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
