"""`python -m backend batch JOBS.jsonl --out DIR [--ray ADDRESS|auto]`: many jobs, one process or a Ray cluster.

JOBS holds one request per line, the wire protocol's `generate` / `edit` / `encode` objects
(validated by `backend.protocol.parse_request`), each with an `id` unique in the file; blank
lines and lines starting with `#` are ignored. A job may use an earlier job's result:
`"asset": "@ID"` is that job's `latent.safetensors`, `"mesh": "@ID"` its `asset.glb`; the job then
waits for it (and fails, without running, if it failed). Other relative input paths are taken
relative to the folder holding JOBS.

Results: DIR/<id>/ (or DIR/<out>/ when the request names `out`) holds the usual files and
`job.json`, the job's record, written last: a folder with a `job.json` whose files are present
and whose latent loads is done, and a re-run skips it (unless its request changed).
DIR/manifest.jsonl holds one JSON line per job (request, status, result paths, timings, error,
attempts, worker), appended as jobs finish and rewritten to one line per job in file order at
the end of every run (jobs not finished then are `pending`).

Without `--ray` the jobs run in this process through the same code as on a cluster
(`Worker.run` -> `execute_chunk` -> `backend.jobs`); text jobs with the same model, steps and
guidance are sampled together (`run_text_batch`). With `--ray`, `backend.batch_ray` starts a pool
of actors on an existing cluster, each holding warm models.

A failed job is retried (at most --retries times) when the failure may be transient (`internal`,
`out_of_memory`, a worker that died); input errors fail at once. Either way the other jobs go
on. Ctrl-C (or SIGTERM) stops cleanly: finished jobs are recorded, the rest stay pending and a
re-run of the same command finishes them. Exit status: 0 when every job is done, 1 when some
failed or are left, 130 when interrupted, 2 for an unusable command or jobs file.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .errors import JobError
from .protocol import JOB_OPS, KMESH_HEADER, KMESH_MAGIC, MESH_FILE_NAME, ProtocolError, parse_request

log = logging.getLogger("kiln.batch")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_NAME = "manifest.jsonl"
RECORD_NAME = "job.json"
LOCK_NAME = ".kiln-batch.lock"
REF_PREFIX = "@"
REF_FILES = {"asset": "latent.safetensors", "mesh": "asset.glb"}  # what "@ID" means in each field
PATH_FIELDS = ("mesh", "asset", "front", "back")
RETRYABLE = frozenset({"internal", "out_of_memory"})
RESULT_FILES = ("asset.glb", MESH_FILE_NAME, "latent.safetensors")


class BatchFileError(Exception):
    """The jobs file as a whole cannot be used (unreadable, duplicate ids or folders)."""


# ------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    index: int                      # line number in JOBS
    id: str
    request: dict | None            # the validated request (None when the line is not one)
    folder: str | None = None       # result folder, relative to DIR
    deps: list[str] = field(default_factory=list)
    refs: dict = field(default_factory=dict)      # field -> job id it refers to
    line_error: JobError | None = None
    fingerprint: str = ""
    status: str = "pending"         # pending | running | ok | failed
    skipped: bool = False           # done by an earlier run
    attempts: int = 0
    errors: list = field(default_factory=list)    # every failed attempt's error, oldest first
    record: dict | None = None
    dependents: list = field(default_factory=list)
    raw: str = ""

    @property
    def text_key(self):
        from .jobs import text_batch_key

        return None if self.request is None else text_batch_key(self.request)


def _folder_name(job_id: str) -> str:
    """The folder the server would give a job without `out` (results.OutputRoot.job_dir)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", job_id).strip("._") or "job"


def load_jobs(path: str) -> list[Job]:
    """Parse JOBS: every line becomes a Job (a line that is not a valid request becomes one
    that fails with its error); raises BatchFileError for duplicate ids or result folders."""
    try:
        with open(path, "rb") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise BatchFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    jobs: list[Job] = []
    by_id: dict[str, Job] = {}
    folders: dict[str, Job] = {}
    for n, raw in enumerate(lines, 1):
        if not raw.strip() or raw.lstrip().startswith(b"#"):
            continue
        text = raw.decode("utf-8", "replace")[:2000]
        try:
            req = parse_request(raw)
            if req["op"] not in JOB_OPS:
                raise ProtocolError("bad_request", f"op {req['op']!r} is not a job: a batch holds "
                                    f"{', '.join(JOB_OPS)} requests", req.get("id"))
            job = Job(n, req["id"], req, raw=text)
        except ProtocolError as exc:
            job = Job(n, exc.request_id or f"line-{n}", None, raw=text,
                      line_error=JobError(exc.code, f"line {n}: {exc.message}"))
        if job.id in by_id:
            raise BatchFileError(f"line {n}: id {job.id!r} is already used on line {by_id[job.id].index}; "
                                 "ids must be unique in a batch")
        by_id[job.id] = job
        if job.request is not None:
            _resolve_refs(job, by_id)
            job.folder = job.request["out"] if job.request["out"] is not None else _folder_name(job.id)
            key = os.path.normpath(job.folder)
            if job.line_error is None and not (os.path.isabs(job.folder) or key.startswith("..")):
                if key in folders:
                    raise BatchFileError(f"line {n}: job {job.id!r} would write to folder {job.folder!r} like "
                                         f"job {folders[key].id!r} on line {folders[key].index}")
                if key in (MANIFEST_NAME, LOCK_NAME, "."):
                    raise BatchFileError(f"line {n}: {job.folder!r} cannot be a result folder")
                folders[key] = job
        jobs.append(job)
    return jobs


def _resolve_refs(job: Job, by_id: dict[str, Job]) -> None:
    for name, value in job.request.items():
        if name not in REF_FILES or not isinstance(value, str) or not value.startswith(REF_PREFIX):
            continue
        target = value[len(REF_PREFIX):]
        dep = by_id.get(target)
        if dep is None or dep is job:
            job.line_error = JobError("bad_request", f"line {job.index}: {name!r} refers to {value!r}, which is not "
                                                     "an earlier job in this file")
            return
        job.refs[name] = target
        if target not in job.deps:
            job.deps.append(target)


def _fingerprint(job: Job, by_id: dict[str, Job]) -> str:
    """What the result depends on: the request and, through references, the jobs it uses."""
    body = {"request": job.request if job.request is not None else job.raw,
            "deps": [by_id[d].fingerprint for d in job.deps]}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def _kmesh_ok(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(KMESH_HEADER.size)
        magic, _version, nv, nf, flags = KMESH_HEADER.unpack(head)
    except (OSError, Exception):  # noqa: BLE001 - short or unreadable: not valid
        return False
    size = KMESH_HEADER.size + nv * 12 + nf * 12 + (nv * 16 if flags & 1 else 0)
    return magic == KMESH_MAGIC and os.path.getsize(path) == size


def valid_result(root: str, job: Job) -> dict | None:
    """The record of a finished job whose files are all there and whose latent loads, else None."""
    from .results import load_latent

    folder = os.path.join(root, job.folder)
    try:
        with open(os.path.join(folder, RECORD_NAME), encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") != "ok" or record.get("fingerprint") != job.fingerprint:
        return None
    names = list(RESULT_FILES) + (["preview.png"] if (record.get("result") or {}).get("preview") else [])
    if not all(os.path.isfile(os.path.join(folder, n)) and os.path.getsize(os.path.join(folder, n)) > 0 for n in names):
        return None
    if not _kmesh_ok(os.path.join(folder, MESH_FILE_NAME)):
        return None
    try:
        load_latent(os.path.join(folder, "latent.safetensors"))
    except JobError:
        return None
    return record


def plan(jobs: list[Job], root: str) -> None:
    """Fingerprint every job and mark the ones an earlier run finished (all their inputs too)."""
    by_id = {j.id: j for j in jobs}
    for job in jobs:  # references point backwards, so file order is a topological order
        job.fingerprint = _fingerprint(job, by_id)
        for d in job.deps:
            by_id[d].dependents.append(job)
        if job.request is None or job.line_error is not None:
            continue
        if all(by_id[d].skipped for d in job.deps):
            record = valid_result(root, job)
            if record is not None:
                job.status, job.skipped, job.record = "ok", True, record
                job.attempts = record.get("attempts", 0)


# -------------------------------------------------------------------------------- job execution

_WORKER_INFO: dict = {}


def _noop_emit(_type: str, _fields: dict) -> None:
    pass


def _outcome(res, registry, t0: float, c0: float) -> dict:
    from models.mesh import Cancelled

    from .errors import classify

    worker = {"host": socket.gethostname(), "pid": os.getpid(), "device": str(registry.device)}
    if isinstance(res, dict):
        res = dict(res)
        timings = res.pop("timings", {})
        res.pop("dir", None)
        return {"status": "ok", "result": res, "timings": timings, "worker": worker,
                "run_s": round(time.perf_counter() - t0, 4), "cpu_s": round(time.process_time() - c0, 4)}
    if isinstance(res, Cancelled):
        err = JobError("cancelled", "cancelled")
    else:
        err = classify(res)
        if err.code == "internal":
            log.error("job failed", exc_info=res)
    return {"status": "failed", "error": {"code": err.code, "message": err.message}, "worker": worker,
            "run_s": round(time.perf_counter() - t0, 4)}


def execute_chunk(registry, root: str, items: list[dict],
                  on_done: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Run jobs ({"id", "request"} with inputs resolved and `out` set) with the backend's job code;
    text jobs that can share a sampling pass do. Returns one outcome per item (status ok with
    result and timings, or failed with error); `on_done` sees each as soon as it is known."""
    from .jobs import JobContext, run_job, run_text_batch, text_batch_key
    from .results import OutputRoot

    output = OutputRoot(root)
    ctxs = [JobContext(it["id"], registry, output, emit=_noop_emit) for it in items]
    reqs = [it["request"] for it in items]
    outcomes: list = [None] * len(items)
    t0, c0 = time.perf_counter(), time.process_time()  # run_s / cpu_s: since the call (or job) started

    def done(i: int, res) -> None:
        if isinstance(res, (KeyboardInterrupt, SystemExit)):
            raise res  # stop now; the unfinished jobs stay pending
        outcomes[i] = _outcome(res, registry, t0, c0)
        if on_done is not None:
            on_done(i, outcomes[i])

    key = text_batch_key(reqs[0]) if reqs else None
    if len(items) > 1 and key is not None and all(text_batch_key(r) == key for r in reqs):
        run_text_batch(ctxs, reqs, on_done=done)
    else:
        for i, (ctx, req) in enumerate(zip(ctxs, reqs)):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                res = run_job(ctx, req)
            except Exception as exc:  # noqa: BLE001 - the job fails alone
                res = exc
            done(i, res)
    return outcomes


class Worker:
    """Warm models + the job code. In-process for local runs; a Ray actor (one per GPU, or per
    `threads` CPUs) on a cluster (backend/batch_ray.py wraps it with ray.remote)."""

    def __init__(self, root: str, device: str = "auto", threads: int = 0, preload: Iterable[str] = ("encode",)):
        if threads:
            os.environ["KILN_THREADS"] = str(threads)
        from .registry import Registry

        t = time.perf_counter()
        self.root = root
        self.registry = Registry(device)
        device_name = str(self.registry.device)  # also sets torch's CPU threads (KILN_THREADS)
        for mode in preload:  # a missing model fails its jobs, not the worker
            with contextlib.suppress(Exception):
                self.registry.get(mode)
        import torch

        self.info = {"host": socket.gethostname(), "pid": os.getpid(), "device": device_name,
                     "threads": torch.get_num_threads(), "load_s": round(time.perf_counter() - t, 3),
                     "loaded": self.registry.loaded()}

    def ready(self) -> dict:
        return self.info

    def run(self, items: list[dict]) -> list[dict]:
        return execute_chunk(self.registry, self.root, items)

    def echo(self, items: list[dict]) -> list[dict]:
        """No model work: what a call costs the pool (bench/batch.py)."""
        return [{"status": "noop", "id": it["id"]} for it in items]


# -------------------------------------------------------------------------------- bookkeeping


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _atomic_write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, default=str)  # a stray numpy scalar must not stop the run
        fh.write("\n")
    os.replace(tmp, path)


class Manifest:
    """DIR/manifest.jsonl: records appended as jobs finish; `compact` rewrites one line per job."""

    def __init__(self, root: str):
        self.path = os.path.join(root, MANIFEST_NAME)
        self.previous = self._read()
        self.fh = open(self.path, "a", encoding="utf-8")

    def _read(self) -> dict[str, dict]:
        last: dict[str, dict] = {}
        with contextlib.suppress(OSError), open(self.path, encoding="utf-8") as fh:
            for line in fh:
                with contextlib.suppress(ValueError):
                    rec = json.loads(line)
                    if isinstance(rec, dict) and isinstance(rec.get("id"), str):
                        last[rec["id"]] = rec
        return last

    def append(self, record: dict) -> None:
        self.fh.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        self.fh.flush()

    def compact(self, jobs: list[Job], pending_record: Callable[[Job], dict]) -> None:
        """One line per job of this file, in file order (the record of a job this run did not
        finish is the earlier run's, or `pending`); lines of other files' jobs are kept."""
        self.fh.close()
        ids = {j.id for j in jobs}
        lines = [j.record if j.record is not None else pending_record(j) for j in jobs]
        lines += [rec for rid, rec in self.previous.items() if rid not in ids]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            for rec in lines:
                fh.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        os.replace(tmp, self.path)


class Progress:
    """An overall tqdm bar on a terminal; otherwise a line every `every` jobs (and at the end)."""

    def __init__(self, total: int, every: int = 10, stream=None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.total, self.every = total, max(1, every)
        self.done = self.ok = self.failed = self.done0 = 0
        self.t0 = time.monotonic()
        self.bar = None
        if (self.stream.isatty() if tty is None else tty) and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="job", file=self.stream, dynamic_ncols=True, smoothing=0.2,
                            desc="batch")

    def restart_clock(self) -> None:
        """Throughput from when workers are ready (model loading is reported on its own)."""
        self.t0, self.done0 = time.monotonic(), self.done
        if self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(self.done)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, ok: bool) -> None:
        self.done += 1
        self.ok += ok
        self.failed += not ok
        if self.bar is not None:
            self.bar.set_postfix_str(f"ok={self.ok} failed={self.failed}", refresh=False)
            self.bar.update(1)
        elif self.done % self.every == 0 or self.done == self.total:
            self.message(self.line())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = (self.done - self.done0) / elapsed * 60.0
        left = self.total - self.done
        eta = _duration(left / rate * 60.0) if rate > 0 and left else "-"
        return (f"[batch] {self.done}/{self.total} ({self.ok} ok, {self.failed} failed) "
                f"{rate:.1f} jobs/min, elapsed {_duration(elapsed)}, ETA {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Scheduler:
    """Which jobs are ready (their references done), retries, records, manifest and progress.
    Executors (local, Ray) take chunks of ready jobs and report each job's outcome."""

    def __init__(self, jobs: list[Job], root: str, base_dir: str, retries: int, manifest: Manifest,
                 progress: Progress, run_id: str):
        self.jobs, self.root, self.base_dir = jobs, root, base_dir
        self.by_id = {j.id: j for j in jobs}
        self.max_attempts = 1 + max(0, retries)
        self.manifest, self.progress, self.run_id = manifest, progress, run_id
        self.ready: collections.deque[Job] = collections.deque()
        self.running = 0
        self.waiting = 0
        self.ran = 0  # jobs this run executed to an outcome
        for job in jobs:  # file order: every job's references come before it
            if job.status != "pending":
                continue
            if job.line_error is not None:
                self._fail(job, {"code": job.line_error.code, "message": job.line_error.message}, cascade=False)
            elif any(self.by_id[d].status == "failed" for d in job.deps):
                self._fail_dependency(job, cascade=False)
            elif all(self.by_id[d].status == "ok" for d in job.deps):
                self.ready.append(job)
            else:
                self.waiting += 1

    # ------------------------------------------------------------ taking work

    @property
    def finished(self) -> bool:
        return not self.ready and not self.running and not self.waiting

    def take(self, n: int) -> list[Job]:
        """Up to n ready jobs: the first ready one, plus (for text jobs) others that can share its
        sampling pass."""
        if not self.ready:
            return []
        first = self.ready.popleft()
        chunk, key = [first], first.text_key
        if key is not None and n > 1:
            kept, scanned = [], 0
            while self.ready and len(chunk) < n and scanned < 256:
                job = self.ready.popleft()
                scanned += 1
                (chunk if job.text_key == key else kept).append(job)
            self.ready.extendleft(reversed(kept))
        for job in chunk:
            job.status = "running"
            job.attempts += 1
            self.running += 1
        return chunk

    def payload(self, job: Job) -> dict:
        """The request a worker runs: references and relative input paths resolved, `out` set."""
        req = dict(job.request, out=job.folder)
        for name in PATH_FIELDS:
            value = req.get(name)
            if not isinstance(value, str) or not value:
                continue
            if name in job.refs:
                dep = self.by_id[job.refs[name]]
                req[name] = os.path.join(self.root, dep.folder, REF_FILES[name])
            else:
                value = os.path.expanduser(value)
                req[name] = value if os.path.isabs(value) else os.path.join(self.base_dir, value)
        return {"id": job.id, "request": req}

    # ------------------------------------------------------------ outcomes

    def complete(self, job: Job, outcome: dict, extra: dict | None = None) -> None:
        """A job's outcome from a worker: ok, failed (retried if transient), or a re-queue."""
        self.running -= 1
        if outcome["status"] == "ok":
            record = self._record(job, "ok", outcome, extra)
            try:
                _atomic_write_json(os.path.join(self.root, job.folder, RECORD_NAME), record)
            except OSError as exc:  # e.g. the shared folder went away: a failed attempt, not a crash
                self.running += 1
                self.complete(job, {"status": "failed", "worker": outcome.get("worker"),
                                    "error": {"code": "internal", "message": f"cannot write {RECORD_NAME}: {exc}"}})
                return
            self.ran += 1
            job.status, job.record = "ok", record
            self.manifest.append(job.record)
            self.progress.update(True)
            for dep in job.dependents:
                if dep.status == "pending" and all(self.by_id[d].status == "ok" for d in dep.deps):
                    self.waiting -= 1
                    self.ready.append(dep)
            return
        error = outcome["error"]
        job.errors.append({**error, "attempt": job.attempts, "worker": outcome.get("worker")})
        if error["code"] in RETRYABLE and job.attempts < self.max_attempts:
            self.progress.message(f"[batch] {job.id}: attempt {job.attempts} failed [{error['code']}] "
                                  f"{error['message']}; retrying")
            job.status = "pending"
            self.ready.appendleft(job)
            return
        self.ran += 1
        self._fail(job, error, outcome, extra)

    def lost(self, job: Job, message: str, charge: bool = True) -> None:
        """The worker running (or holding) the job died or the call failed in the cluster.
        `charge=False`: the job had not started (it was queued behind the job that was running)."""
        if not charge:
            self.running -= 1
            job.attempts -= 1
            job.status = "pending"
            self.ready.appendleft(job)
            return
        self.complete(job, {"status": "failed", "error": {"code": "internal", "message": message}})

    def requeue_unstarted(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self.lost(job, "", charge=False)

    def _fail(self, job: Job, error: dict, outcome: dict | None = None, extra: dict | None = None,
              cascade: bool = True) -> None:
        job.status = "failed"
        job.record = self._record(job, "failed", {**(outcome or {}), "error": error}, extra)
        self.manifest.append(job.record)
        self.progress.update(False)
        if cascade:  # jobs waiting for this one cannot run now
            for dep in job.dependents:
                if dep.status == "pending":
                    self.waiting -= 1
                    self._fail_dependency(dep, job)

    def _fail_dependency(self, job: Job, failed: Job | None = None, cascade: bool = True) -> None:
        failed = failed or next(self.by_id[d] for d in job.deps if self.by_id[d].status == "failed")
        code = (failed.record or {}).get("error", {}).get("code", "internal")
        self._fail(job, {"code": "bad_input", "message": f"not run: it uses job {failed.id!r}, which failed [{code}]"},
                   cascade=cascade)

    def _record(self, job: Job, status: str, outcome: dict, extra: dict | None = None) -> dict:
        rec = {"id": job.id, "status": status, "line": job.index,
               "request": job.request if job.request is not None else job.raw,
               "dir": os.path.join(self.root, job.folder) if job.folder else None,
               "result": None, "timings": {}, "error": None, "attempts": job.attempts,
               "errors": job.errors if status == "ok" else job.errors[:-1],
               "worker": outcome.get("worker"), "fingerprint": job.fingerprint, "run": self.run_id,
               "finished": _now()}
        if job.refs and job.request is not None:
            rec["inputs"] = {k: self.payload(job)["request"][k] for k in job.refs}
        if status == "ok":
            rec["result"] = outcome["result"]
            run = {k: outcome[k] for k in ("run_s", "cpu_s") if k in outcome}
            rec["timings"] = {**outcome.get("timings", {}), **run, **(extra or {})}
        else:
            rec["error"] = outcome["error"]
            if extra:
                rec["timings"] = dict(extra)
        return rec

    def pending_record(self, job: Job) -> dict:
        prev = self.manifest.previous.get(job.id)
        if prev is not None and prev.get("fingerprint") == job.fingerprint and prev.get("status") == "failed" \
                and job.attempts == 0:
            return prev  # not retried this run (interrupted before): keep the earlier failure
        return {"id": job.id, "status": "pending", "line": job.index, "request": job.request or job.raw,
                "dir": os.path.join(self.root, job.folder) if job.folder else None, "result": None,
                "timings": {}, "error": None, "attempts": job.attempts, "errors": job.errors,
                "worker": None, "fingerprint": job.fingerprint, "run": self.run_id, "finished": None}

    def counts(self) -> dict:
        c = collections.Counter(j.status for j in self.jobs)
        skipped = sum(j.skipped for j in self.jobs)
        return {"jobs": len(self.jobs), "ok": c["ok"], "failed": c["failed"],
                "pending": c["pending"] + c["running"], "skipped": skipped, "ran": self.ran}


# -------------------------------------------------------------------------------- executors


def needed_modes(jobs: list[Job]) -> list[str]:
    modes = ["encode"]
    for job in jobs:
        req = job.request
        if req is None or job.status == "ok":
            continue
        mode = "text" if req["op"] == "generate" and req["mode"] == "text" else \
            "images" if req["op"] == "generate" else "edit" if req["op"] == "edit" else "encode"
        if mode not in modes and req.get("model") is None:
            modes.append(mode)
    return modes


def run_local(sched: Scheduler, opts: "BatchOptions", worker: Worker | None = None) -> dict:
    """Every job in this process, through the same Worker the Ray actors run."""
    if worker is None:
        worker = Worker(sched.root, device=opts.device, threads=opts.threads, preload=needed_modes(sched.jobs))
    sched.progress.restart_clock()
    call = -1
    while not sched.finished:
        call += 1
        chunk = sched.take(max(1, opts.batch))
        if not chunk:
            raise RuntimeError("no job is ready but some are waiting (this is a bug)")
        t = time.perf_counter()
        pending = list(chunk)

        def on_done(i: int, outcome: dict, chunk=chunk, t=t, call=call) -> None:
            pending.remove(chunk[i])
            sched.complete(chunk[i], outcome, {"call": call, "call_s": round(time.perf_counter() - t, 4),
                                               "chunk": len(chunk)})

        try:
            execute_chunk(worker.registry, sched.root, [sched.payload(j) for j in chunk], on_done=on_done)
        except BaseException:
            sched.requeue_unstarted(pending)
            raise
    return {"mode": "local", "workers": [worker.info]}


# -------------------------------------------------------------------------------- command line


@dataclass
class BatchOptions:
    """The command's options, for calling run_batch from Python."""
    ray: str | None = None          # cluster address or "auto"; None: this process
    workers: int | None = None      # Ray actors (default: one per GPU, else CPUs / threads)
    threads: int = 0                # CPU threads per worker (0: KILN_THREADS or all cores)
    retries: int = 2
    batch: int = 4                  # text jobs per sampling pass / per call
    inflight: int = 2               # calls queued per actor
    workers_per_gpu: int = 1        # actors sharing one GPU (small models leave a GPU idle otherwise)
    wait_workers: bool = False      # Ray: give out jobs once every actor is ready (benchmarks)
    device: str = "auto"
    log_every: int = 10
    start_timeout: float = 600.0


def add_batch_parser(sub) -> None:
    p = sub.add_parser("batch", help="run a JSON-lines file of jobs, locally or on a Ray cluster",
                       description="Run generate/edit/encode requests (one JSON object per line) into DIR, "
                                   "in this process or on an existing Ray cluster (--ray). Re-running the same "
                                   "command skips finished jobs.")
    p.add_argument("jobs", help="JSON-lines file: one generate/edit/encode request per line, unique ids; "
                                "\"asset\": \"@ID\" / \"mesh\": \"@ID\" use an earlier job's latent / GLB")
    p.add_argument("--out", required=True, help="results folder: DIR/<id>/ per job and DIR/manifest.jsonl")
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="run on an existing Ray cluster: its address (host:port) or 'auto'")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray actors (default: one per GPU, else CPUs / --threads)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per worker (default: 1 on Ray; KILN_THREADS or all cores locally)")
    p.add_argument("--retries", type=int, default=2, help="retries of a job that failed transiently (default 2)")
    p.add_argument("--batch", type=int, default=4,
                   help="at most this many text jobs share one sampling pass / one call to a worker (default 4)")
    p.add_argument("--inflight", type=int, default=2, help="calls queued per Ray actor (backpressure; default 2)")
    p.add_argument("--workers-per-gpu", type=int, default=1,
                   help="Ray actors sharing one GPU (num_gpus=1/K each; default 1)")
    p.add_argument("--wait-workers", action="store_true",
                   help="Ray: start giving out jobs once every worker has loaded its models (for timing)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="local runs")
    p.add_argument("--log-every", type=int, default=10, help="without a terminal: a progress line every N jobs")
    p.add_argument("--start-timeout", type=float, default=600.0,
                   help="seconds to wait for the first Ray worker (default 600)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout at the end")
    p.add_argument("--models-dir", default=None, help="folder with published checkpoints (as for generate)")


def _interrupt(_signum, _frame):
    raise KeyboardInterrupt()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the run) stops like Ctrl-C (backend.batch_ray sets it again
    after ray.init, which installs its own)."""
    try:
        old = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _lock(root: str):
    import fcntl

    fh = open(os.path.join(root, LOCK_NAME), "w")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BatchFileError(f"another batch run is using {root}") from None
        yield
    finally:
        fh.close()


def run_batch(jobs_path: str, out: str, opts: BatchOptions | None = None,
              worker: Worker | None = None) -> tuple[int, dict]:
    """Run the batch; returns (exit status, summary). `worker`: an in-process Worker to reuse
    (local runs only; its models stay warm across calls)."""
    opts = opts or BatchOptions()
    root = os.path.realpath(os.path.abspath(os.path.expanduser(out)))
    os.makedirs(root, exist_ok=True)
    with _lock(root):
        jobs = load_jobs(jobs_path)
        plan(jobs, root)
        # the random suffix keeps two runs of one process in the same second apart (a worker kept
        # warm across calls reruns within a second when there is nothing left to do)
        run_id = time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}-{os.urandom(3).hex()}"
        manifest = Manifest(root)
        to_run = sum(1 for j in jobs if j.status != "ok")
        progress = Progress(to_run, opts.log_every)
        sched = Scheduler(jobs, root, os.path.dirname(os.path.abspath(jobs_path)), opts.retries, manifest,
                          progress, run_id)
        skipped = sum(j.skipped for j in jobs)
        where = f"Ray cluster {opts.ray}" if opts.ray else "this process"
        progress.message(f"[batch] {len(jobs)} jobs: {skipped} already done, {to_run} to run in {where} -> {root}")
        t0 = time.monotonic()
        info: dict = {"mode": "ray" if opts.ray else "local"}
        interrupted = False
        error = None
        try:
            with _sigterm_as_interrupt():
                if sched.finished:
                    pass
                elif opts.ray:
                    from .batch_ray import run_ray

                    info = run_ray(sched, opts)
                else:
                    info = run_local(sched, opts, worker)
        except KeyboardInterrupt:
            interrupted = True
        except BatchFileError as exc:
            error = str(exc)
        finally:
            progress.close()
            manifest.compact(jobs, sched.pending_record)
        elapsed = time.monotonic() - t0
        summary = {**sched.counts(), "elapsed_s": round(elapsed, 3),
                   "work_s": round(time.monotonic() - progress.t0, 3) if sched.ran else 0.0,
                   "interrupted": interrupted, "error": error, "manifest": manifest.path, "out": root, **info}
        work = summary["work_s"]
        summary["jobs_per_min"] = round(sched.ran / work * 60.0, 2) if work > 0 else None
        _print_summary(summary, sched, progress)
    status = 130 if interrupted else 0 if summary["ok"] == summary["jobs"] else 1
    return status, summary


def _print_summary(s: dict, sched: Scheduler, progress: Progress) -> None:
    say = progress.message
    state = "interrupted" if s["interrupted"] else "stopped" if s["error"] else "done"
    say(f"[batch] {state}: {s['jobs']} jobs: {s['ok']} ok ({s['skipped']} from earlier runs), {s['failed']} failed, "
        f"{s['pending']} left; ran {s['ran']} in {s['elapsed_s']:.1f} s"
        + (f" ({s['jobs_per_min']:.1f} jobs/min once workers were ready)" if s.get("jobs_per_min") else ""))
    if s["error"]:
        say(f"[batch] error: {s['error']}")
    failed = [j for j in sched.jobs if j.status == "failed"]
    for job in failed[:10]:
        err = job.record["error"]
        say(f"[batch]   failed {job.id}: [{err['code']}] {err['message']}")
    if len(failed) > 10:
        say(f"[batch]   ... and {len(failed) - 10} more (see the manifest)")
    if s["pending"]:
        say("[batch] run the same command again to finish the rest")
    say(f"[batch] manifest: {s['manifest']}")


def run_batch_command(args) -> int:
    if args.threads is not None and args.threads < 1 or args.batch < 1 or args.inflight < 1 \
            or args.workers is not None and args.workers < 1 or args.workers_per_gpu < 1:
        print("error [bad_request]: --threads, --workers, --workers-per-gpu, --batch and --inflight must be at "
              "least 1", file=sys.stderr)
        return 2
    if args.threads is None:
        args.threads = 1 if args.ray else int(os.environ.get("KILN_THREADS", "0") or 0)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s kiln %(levelname)s %(message)s", stream=sys.stderr)
    out = sys.stdout
    if args.json:  # stdout carries the summary only: anything else printed (Ray, libraries) goes to stderr
        from .server import protect_stdout

        out = protect_stdout()
    opts = BatchOptions(**{k: getattr(args, k) for k in BatchOptions.__dataclass_fields__})
    try:
        status, summary = run_batch(args.jobs, args.out, opts)
    except BatchFileError as exc:
        print(f"error [bad_request]: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out.write(json.dumps(summary) + "\n")
        out.flush()
    return status


__all__ = ["BatchOptions", "Job", "Manifest", "Progress", "Scheduler", "Worker", "add_batch_parser", "execute_chunk",
           "load_jobs", "plan", "run_batch", "run_batch_command", "run_local", "valid_result"]
