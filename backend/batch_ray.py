"""The batch on an existing Ray cluster (`python -m backend batch JOBS --out DIR --ray ADDRESS|auto`).

A pool of actors (`backend.batch.Worker`: warm models + the backend's job code), one GPU each
when the cluster has GPUs (1/K of one with --workers-per-gpu K), else `--threads` CPUs each. The driver hands each actor chunks of ready
jobs and keeps at most `--inflight` calls queued per actor (backpressure: the rest wait in the
driver, and an actor's queue never holds more than a few jobs to lose). Actor calls are not
retried by Ray (max_restarts=0, max_task_retries=0): when an actor dies, the driver re-queues its
jobs (the one it was running is charged an attempt, the ones queued behind it are not) and starts
a new actor in its place, so nothing is run twice by accident nor lost.

Every node needs Kiln at the same path as the driver (a shared filesystem or the same install,
with its venv) and DIR must be a path every node sees (the actors write results there; the driver
writes the records and the manifest). Ray is an optional extra: `KILN_EXTRAS=ray bash scripts/setup.sh`.
"""
from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

from .batch import REPO_ROOT, BatchFileError, Job, Scheduler, Worker, _interrupt, needed_modes


@dataclass
class _Slot:
    n: int
    actor: object
    ready_ref: object | None
    info: dict | None = None
    calls: "collections.OrderedDict" = field(default_factory=collections.OrderedDict)  # ref -> (jobs, t)
    dead: bool = False


def _connect(address: str, threads: int):
    try:
        import ray
    except ImportError:
        raise BatchFileError("--ray needs the Ray extra: KILN_EXTRAS=ray bash scripts/setup.sh "
                             "(or pip install -r requirements-ray.txt)") from None

    env = {"PYTHONPATH": REPO_ROOT, "KILN_THREADS": str(threads)}
    if os.environ.get("KILN_MODELS_DIR"):
        env["KILN_MODELS_DIR"] = os.environ["KILN_MODELS_DIR"]
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, namespace="kiln-batch", log_to_driver=False,
                 logging_level=logging.WARNING, configure_logging=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BatchFileError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # ray.init's own handler would just exit
    return ray


def run_ray(sched: Scheduler, opts) -> dict:
    ray = _connect(opts.ray, opts.threads or 1)
    from ray.exceptions import RayActorError, RayError

    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 0))
        threads = opts.threads or 1
        share = max(1, opts.workers_per_gpu)
        n_workers = opts.workers or (gpus * share if gpus else max(1, cpus // threads))
        if gpus and n_workers > gpus * share or n_workers * threads > cpus:
            sched.progress.message(f"[batch] warning: {n_workers} workers asked for, the cluster has {cpus} CPUs and "
                                   f"{gpus} GPUs: some will wait for resources")
        actor_cls = ray.remote(Worker).options(
            num_cpus=threads, num_gpus=1 / share if gpus else 0, max_restarts=0, max_task_retries=0,
            max_concurrency=1, scheduling_strategy="SPREAD")
        preload = needed_modes(sched.jobs)
        device = "cuda" if gpus else "cpu"
        budget = 2 * n_workers + 2  # replacement actors before giving up
        slots: list[_Slot] = []
        started = 0
        t_start = time.monotonic()
        first_ready = clock_started = False
        last_error = ""
        calls = 0

        def spawn() -> _Slot:
            nonlocal started
            actor = actor_cls.remote(sched.root, device, threads, preload)
            slot = _Slot(started, actor, actor.ready.remote())
            started += 1
            slots.append(slot)
            return slot

        def retire(slot: _Slot, why: str) -> None:
            """The actor is gone: re-queue its jobs, start another in its place (within budget)."""
            nonlocal budget, last_error
            if slot.dead:
                return
            slot.dead = True
            last_error = why
            sched.progress.message(f"[batch] worker {slot.n} died ({why}); its jobs go back to the queue")
            for i, (jobs, _t) in enumerate(slot.calls.values()):
                if i == 0:  # the call it was running (actor calls run in submission order)
                    for job in jobs:
                        sched.lost(job, f"the worker running it died: {why}")
                else:
                    sched.requeue_unstarted(jobs)
            slot.calls.clear()
            with _quiet():
                ray.kill(slot.actor)
            if budget > 0 and not sched.finished:
                budget -= 1
                sched.progress.message(f"[batch] started worker {spawn().n} in its place")

        for _ in range(n_workers):
            spawn()
        try:
            while not sched.finished:
                live = [s for s in slots if not s.dead]
                ready = [s for s in live if s.info is not None]
                if opts.wait_workers and not clock_started:
                    ready = []  # start all at once (benchmarks)
                # feed: chunks small enough that every ready actor gets work, big enough to batch
                for slot in ready:
                    while len(slot.calls) < opts.inflight and sched.ready:
                        per = _ceil_div(len(sched.ready), len(ready) * opts.inflight)
                        jobs = sched.take(max(1, min(opts.batch, per)))
                        ref = slot.actor.run.remote([sched.payload(j) for j in jobs])
                        slot.calls[ref] = (jobs, time.perf_counter())
                waiting_on = [s.ready_ref for s in live if s.info is None] + [r for s in live for r in s.calls]
                if not waiting_on:
                    if not live:
                        raise BatchFileError(f"no Ray workers left (the last error: {last_error})")
                    raise RuntimeError("nothing in flight but jobs remain (this is a bug)")
                if not first_ready and time.monotonic() - t_start > opts.start_timeout:
                    raise BatchFileError(f"no Ray worker started within {opts.start_timeout:.0f} s (cluster: {cpus} "
                                         f"CPUs, {gpus} GPUs; last error: {last_error or 'none'})")
                done, _ = ray.wait(waiting_on, num_returns=1, timeout=0.5)
                for ref in done:
                    slot = next((s for s in live if ref == s.ready_ref or ref in s.calls), None)
                    if slot is None or slot.dead:
                        continue
                    if ref == slot.ready_ref and slot.info is None:
                        try:
                            slot.info = ray.get(ref)
                        except RayError as exc:
                            retire(slot, _first_line(exc))
                            continue
                        first_ready = True
                        if not clock_started and (not opts.wait_workers or all(s.info for s in slots if not s.dead)):
                            clock_started = True
                            sched.progress.restart_clock()
                        continue
                    jobs, t = slot.calls[ref]
                    try:
                        outcomes = ray.get(ref)
                    except RayActorError as exc:
                        retire(slot, _first_line(exc))  # all its calls, in submission order
                        continue
                    except RayError as exc:  # e.g. Ray's memory monitor killed the call
                        del slot.calls[ref]
                        for job in jobs:
                            sched.lost(job, f"the call failed in the cluster: {_first_line(exc)}")
                        continue
                    del slot.calls[ref]
                    call_s = round(time.perf_counter() - t, 4)
                    for job, outcome in zip(jobs, outcomes):
                        sched.complete(job, outcome, {"call": calls, "call_s": call_s, "chunk": len(jobs)})
                    calls += 1
        except KeyboardInterrupt:
            for slot in slots:  # the jobs they hold stay pending; a re-run finishes them
                for jobs, _t in slot.calls.values():
                    sched.requeue_unstarted(jobs)
                slot.calls.clear()
            raise
        finally:
            for slot in slots:
                with _quiet():
                    ray.kill(slot.actor)
        return {"mode": "ray", "cluster": {"CPU": cpus, "GPU": gpus}, "workers": [s.info for s in slots if s.info],
                "workers_started": started, "threads_per_worker": threads}
    finally:
        with _quiet():
            ray.shutdown()


def _ceil_div(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and not issubclass(exc[0], KeyboardInterrupt)


__all__ = ["run_ray", "Job"]
