"""Batch throughput: one local process vs a Ray pool of 1 and 2 one-thread workers, Ray's overhead
per job, and the driver's own cost per job (docs/scaling.md builds its model on these figures).

    .venv/bin/python bench/batch.py [--jobs 40] [--resolution 64] [--batch 4] [--candidates N] [--no-rebuild]

Each configuration runs the same text jobs through `python -m backend batch ... --json` into a
fresh folder (a Ray cluster with 2 CPUs is started on 127.0.0.1 for the Ray runs):

- jobs/min: jobs / (last job done - workers ready), so model loading is reported apart
  (`load_s`); `wall_s` is the whole command, start-up included. Ray runs use --wait-workers (jobs
  are given out once every worker has loaded its models, so the 2-worker figure is not diluted by
  one worker starting later).
- busy_s: the worker's compute, the sum over calls of the call's duration inside the worker;
  cpu_per_job_s: the worker process's CPU time per job (what the job costs whatever the load;
  wall_per_job_in_worker_s / cpu_per_job_s > 1 means the worker waited for a CPU); idle per job = (work_s * workers - busy_s) / jobs: time a worker waited for the driver / Ray.
- Ray overhead per job, measured three ways: (1) the 1-worker Ray run minus the local run, per job
  (end to end, noisy on a shared machine); (2) idle per job of the 1-worker Ray run; (3) a call to
  an actor method that does no model work (`Worker.echo`) with the same payloads, per job.
- driver: Scheduler take/payload/complete (job.json + manifest line) per job with fake outcomes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

PROMPTS = ["a red chair", "a blue car with four wheels", "a green tree", "a yellow lamp", "a white mug",
           "a black sword", "an orange house with a chimney", "a purple vase", "a tall rocket", "a brown table"]


def write_jobs(path: str, n: int, resolution: int, candidates: int | None = None, rebuild: bool = True) -> str:
    extra = {**({} if candidates is None else {"candidates": candidates}), **({} if rebuild else {"rebuild": False})}
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"op": "generate", "id": f"j{i:03d}", "prompt": PROMPTS[i % len(PROMPTS)], "seed": i,
                                 "resolution": resolution, "preview": False, **extra}) + "\n")
    return path


def run_cli(jobs: str, out: str, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": REPO, "KILN_THREADS": "1"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "backend", "batch", jobs, "--out", out, "--json", *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout)
    with open(os.path.join(out, "manifest.jsonl")) as fh:
        recs = [json.loads(line) for line in fh]
    calls = collections.defaultdict(float)  # (worker pid, call) -> the call's duration inside the worker
    cpu = collections.defaultdict(float)    # ... and the worker process's CPU time in it
    for r in recs:
        key = (r["worker"]["pid"], r["timings"]["call"])
        calls[key] = max(calls[key], r["timings"]["run_s"])
        cpu[key] = max(cpu[key], r["timings"]["cpu_s"])
    n, workers = summary["ran"], max(1, len(summary["workers"]))
    busy = sum(calls.values())
    per_job = [r["timings"]["total"] for r in recs if r["timings"].get("chunk") == 1]
    sizes = [sum(os.path.getsize(os.path.join(r["dir"], f)) for f in ("asset.glb", "mesh.kmesh", "latent.safetensors"))
             for r in recs]
    return {"jobs": n, "wall_s": round(wall, 2), "work_s": summary["work_s"], "jobs_per_min": summary["jobs_per_min"],
            "load_s": [w["load_s"] for w in summary["workers"]], "busy_s": round(busy, 2),
            "cpu_per_job_s": round(sum(cpu.values()) / n, 3), "wall_per_job_in_worker_s": round(busy / n, 3),
            "idle_per_job_ms": round(1000 * (summary["work_s"] * workers - busy) / n, 1),
            "mean_chunk": round(statistics.mean(r["timings"]["chunk"] for r in recs), 2),
            "job_s_unbatched": round(statistics.median(per_job), 3) if per_job else None,
            "result_bytes_per_job": int(statistics.mean(sizes))}


def start_cluster(temp: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.makedirs(temp, exist_ok=True)
    log = os.path.join(temp, "head.log")
    head = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head",
                             "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2", "--num-gpus",
                             "0", "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", temp, "--block"],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=temp,
                            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    deadline = time.monotonic() + 120
    while b"--block" not in open(log, "rb").read():
        if head.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(open(log).read()[-3000:])
        time.sleep(0.2)
    return head, f"127.0.0.1:{port}"


def echo_overhead(address: str, jobs_path: str, root: str, n_jobs: int, chunk: int) -> dict:
    """Ray's cost per job without model work: calls to Worker.echo with real payloads, 2 in flight."""
    import ray

    from backend.batch import BatchOptions, Manifest, Progress, Scheduler, Worker, load_jobs, plan

    os.makedirs(root, exist_ok=True)
    jobs = load_jobs(jobs_path)
    plan(jobs, root)
    sched = Scheduler(jobs, root, REPO, 0, Manifest(root), Progress(0, tty=False), "bench")
    payloads = [sched.payload(j) for j in jobs][:n_jobs]
    ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": REPO, "KILN_THREADS": "1"}},
             log_to_driver=False, logging_level="WARNING")
    try:
        actor = ray.remote(Worker).options(num_cpus=1).remote(root, "cpu", 1, ())
        ray.get(actor.ready.remote())
        ray.get(actor.echo.remote(payloads[:chunk]))  # warm
        t = time.perf_counter()
        inflight = []
        for i in range(0, len(payloads), chunk):
            inflight.append(actor.echo.remote(payloads[i:i + chunk]))
            if len(inflight) >= BatchOptions().inflight:
                ray.get(inflight.pop(0))
        ray.get(inflight)
        pipelined = (time.perf_counter() - t) / len(payloads)
        t = time.perf_counter()
        for i in range(0, len(payloads), chunk):
            ray.get(actor.echo.remote(payloads[i:i + chunk]))
        round_trip = (time.perf_counter() - t) / (len(payloads) / chunk)
    finally:
        ray.shutdown()
    return {"echo_per_job_pipelined_ms": round(1000 * pipelined, 2), "echo_round_trip_per_call_ms": round(1000 * round_trip, 2)}


def driver_cost(jobs_path: str, root: str) -> float:
    """ms per job of the driver's bookkeeping (take, payload, job.json, manifest line)."""
    import backend.jobs  # noqa: F401 - imported by any real driver (text_key); not part of the per-job cost
    from backend.batch import Manifest, Progress, Scheduler, load_jobs, plan

    os.makedirs(root, exist_ok=True)
    jobs = load_jobs(jobs_path)
    plan(jobs, root)
    for j in jobs:
        os.makedirs(os.path.join(root, j.folder), exist_ok=True)  # the worker makes it
    sched = Scheduler(jobs, root, REPO, 0, Manifest(root), Progress(len(jobs), every=10**9, tty=False), "bench")
    fake = {"status": "ok", "result": {"glb": "/x/asset.glb", "mesh_file": "/x/mesh.kmesh", "latent": "/x/latent",
                                       "preview": None, "mesh": {"vertices": 5000, "faces": 10000,
                                                                 "bounds": [[-1, -1, -1], [1, 1, 1]]},
                                       "warnings": [], "batch_size": 4},
            "timings": {"load_model": 0.0, "sample": 0.1, "mesh": 0.2, "write": 0.01, "total": 0.3},
            "worker": {"host": "h", "pid": 1, "device": "cpu"}, "run_s": 0.3}
    t = time.perf_counter()
    while not sched.finished:
        chunk = sched.take(4)
        [sched.payload(j) for j in chunk]
        for j in chunk:
            sched.complete(j, fake, {"call": 0, "call_s": 0.3, "chunk": len(chunk)})
    return round(1000 * (time.perf_counter() - t) / len(jobs), 3)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--resolution", type=int, default=64, choices=(64, 128, 256))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--candidates", type=int, default=None,
                   help="samples each text job tries (default: the backend's, 4; 1: one sample, as before 2026-11-28)")
    p.add_argument("--no-rebuild", dest="rebuild", action="store_false",
                   help="leave samples in pieces as they are (the backend rebuilds them by default since 2026-11-28)")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="kb", dir="/tmp")
    jobs = write_jobs(os.path.join(tmp, "jobs.jsonl"), args.jobs, args.resolution, args.candidates, args.rebuild)
    with open("/proc/loadavg") as fh:
        load_before = fh.read().split()[:3]
    out: dict = {"jobs": args.jobs, "resolution": args.resolution, "batch": args.batch, "candidates": args.candidates,
                 "rebuild": args.rebuild, "cpus": os.cpu_count(),
                 "loadavg_before": load_before}
    b = ["--batch", str(args.batch)]
    out["local_1thread"] = run_cli(jobs, os.path.join(tmp, "local"), "--threads", "1", *b)
    head, address = start_cluster(os.path.join(tmp, "ray"))
    try:
        for n in (1, 2):
            out[f"ray_{n}worker"] = run_cli(jobs, os.path.join(tmp, f"ray{n}"), "--ray", address, "--workers", str(n),
                                            "--threads", "1", "--wait-workers", *b)
        out.update(echo_overhead(address, jobs, os.path.join(tmp, "echo"), args.jobs, args.batch))
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(os.path.join(tmp, "ray"), ignore_errors=True)
    out["driver_per_job_ms"] = driver_cost(write_jobs(os.path.join(tmp, "many.jsonl"), 2000, 64),
                                           os.path.join(tmp, "driver"))
    local, r1, r2 = out["local_1thread"], out["ray_1worker"], out["ray_2worker"]
    out["ray2_vs_ray1"] = round(r2["jobs_per_min"] / r1["jobs_per_min"], 2)
    out["ray2_vs_local"] = round(r2["jobs_per_min"] / local["jobs_per_min"], 2)
    out["ray_overhead_per_job_ms_end_to_end"] = round(1000 * (r1["work_s"] - local["work_s"]) / args.jobs, 1)
    with open("/proc/loadavg") as fh:
        out["loadavg_after"] = fh.read().split()[:3]
    shutil.rmtree(tmp, ignore_errors=True)
    for k, v in out.items():
        print(f"{k:36s} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
