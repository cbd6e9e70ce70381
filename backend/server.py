"""`python -m backend serve`: JSON lines on stdin -> events on stdout.

The reader (main thread) parses and validates each line and answers `hello`,
`cancel` and bad lines at once; model work goes to a FIFO queue served by one
worker thread. Running jobs check for cancellation between sampler steps and
mesh chunks. Only protocol lines go to stdout: file descriptor 1 is redirected
to stderr at start-up, so stray prints from libraries cannot corrupt the stream.
"""
from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import traceback

from models.mesh import Cancelled

from . import __version__
from .errors import JobError, classify
from .jobs import JobContext, run_job, run_text_batch, text_batch_key
from .protocol import MAX_LINE_BYTES, PROTOCOL_VERSION, ProtocolError, error_event, event, parse_request
from .registry import Registry
from .results import OutputRoot

log = logging.getLogger("kiln.backend")


class EventWriter:
    """Thread-safe writer of protocol lines."""

    def __init__(self, stream):
        self.stream = stream
        self.lock = threading.Lock()

    def write(self, line: str) -> None:
        with self.lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass  # the client went away; the reader will see EOF and stop us


class Server:
    def __init__(self, output_root: str, registry: Registry | None = None, stdin=None, stdout=None,
                 debug: bool = False):
        self.registry = registry or Registry()
        self.output = OutputRoot(output_root)
        self.stdin = stdin if stdin is not None else sys.stdin.buffer
        self.out = EventWriter(stdout if stdout is not None else sys.stdout)
        self.debug = debug
        self.queue: collections.deque[JobContext] = collections.deque()
        self.requests: dict[str, dict] = {}
        self.cond = threading.Condition()
        self.running: list[JobContext] = []  # one job, or a batch of text jobs sampled together
        self.stopping = False
        self.worker = threading.Thread(target=self._work, name="kiln-worker", daemon=True)

    # -------------------------------------------------------------- reader

    def serve_forever(self) -> int:
        self.worker.start()
        try:
            while not self.stopping:
                line = self.stdin.readline(MAX_LINE_BYTES + 1)
                if not line:
                    log.info("stdin closed: shutting down")
                    break
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    self._skip_rest_of_line()
                    self.out.write(error_event("bad_request", f"line longer than {MAX_LINE_BYTES} bytes"))
                    continue
                if not line.strip():
                    continue  # blank lines are not requests
                self.handle_line(line)
        finally:
            self.stop()
        return 0

    def _skip_rest_of_line(self) -> None:
        while True:
            chunk = self.stdin.readline(MAX_LINE_BYTES)
            if not chunk or chunk.endswith(b"\n"):
                return

    def handle_line(self, line: bytes) -> None:
        try:
            req = parse_request(line)
        except ProtocolError as exc:
            self.out.write(error_event(exc.code, exc.message, exc.request_id))
            return
        try:
            getattr(self, f"_op_{req['op']}", self._op_job)(req)
        except Exception as exc:  # never let one request take the server down
            log.exception("failed to handle %s", req.get("op"))
            self.out.write(error_event("internal", f"{type(exc).__name__}: {exc}", req.get("id")))

    def _op_hello(self, req: dict) -> None:
        import torch

        device = self.registry.device
        self.out.write(event("result", req["id"], op="hello", protocol=PROTOCOL_VERSION, backend=__version__,
                             torch=torch.__version__, device=str(device),
                             cuda=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                             models=self.registry.status(), loaded=self.registry.loaded(),
                             output_root=self.output.root, pid=os.getpid(), queued=len(self.queue),
                             running=[c.id for c in self.running]))

    def _op_cancel(self, req: dict) -> None:
        target = req["target"]
        with self.cond:
            queued = next((c for c in self.queue if c.id == target), None)
            if queued is not None:
                self.queue.remove(queued)
                self.requests.pop(target, None)  # or the id would stay "already queued" forever
            running = next((c for c in self.running if c.id == target), None)
            if running is not None:
                running.cancel_event.set()
        if queued is not None:
            self.out.write(event("cancelled", target, stage="queued"))
        if queued is None and running is None:
            self.out.write(error_event("not_found", f"no queued or running job with id {target!r}", req["id"]))
            return
        self.out.write(event("result", req["id"], op="cancel", target=target, was="queued" if queued else "running"))

    def _op_shutdown(self, req: dict) -> None:
        self.out.write(event("result", req["id"], op="shutdown"))
        self.stopping = True

    def _op_job(self, req: dict) -> None:
        rid = req["id"]
        with self.cond:
            if self.stopping:
                self.out.write(error_event("shutting_down", "the backend is shutting down", rid))
                return
            if rid in self.requests or any(c.id == rid for c in self.running):
                self.out.write(error_event("bad_request", f"a job with id {rid!r} is already queued or running", rid))
                return
            ctx = JobContext(rid, self.registry, self.output, emit=lambda t, f, rid=rid: self.out.write(event(t, rid, **f)))
            self.queue.append(ctx)
            self.requests[rid] = req
            position = len(self.queue) - 1 + len(self.running)
            self.out.write(event("accepted", rid, op=req["op"], position=position))
            self.cond.notify()

    # -------------------------------------------------------------- worker

    MAX_TEXT_BATCH = 8

    def _work(self) -> None:
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                batch = [self.queue.popleft()]
                reqs = [self.requests.pop(batch[0].id)]
                key = text_batch_key(reqs[0])
                # queued text jobs with the same model/steps/guidance share one sampling pass
                while key is not None and self.queue and len(batch) < self.MAX_TEXT_BATCH \
                        and text_batch_key(self.requests[self.queue[0].id]) == key:
                    batch.append(self.queue.popleft())
                    reqs.append(self.requests.pop(batch[-1].id))
                self.running = list(batch)
            if key is not None:
                run_text_batch(batch, reqs, on_done=lambda i, outcome: self._finish(batch[i], reqs[i], outcome))
            else:
                self._finish(batch[0], reqs[0], self._run(batch[0], reqs[0]))

    def _finish(self, ctx: JobContext, req: dict, outcome) -> None:
        """Write a job's final event, after taking it off the running list (so a later cancel
        finds it gone)."""
        if not isinstance(outcome, str):
            outcome = self._final_event(ctx, req, outcome)
        with self.cond:
            if ctx in self.running:
                self.running.remove(ctx)
        self.out.write(outcome)

    def _run(self, ctx: JobContext, req: dict) -> str:
        """Run one job; return its final event line (result, cancelled or error)."""
        try:
            outcome = run_job(ctx, req)
        except BaseException as exc:  # noqa: BLE001 - report every failure as an error event
            outcome = exc
        return self._final_event(ctx, req, outcome)

    def _final_event(self, ctx: JobContext, req: dict, outcome) -> str:
        if isinstance(outcome, dict):
            try:
                return event("result", ctx.id, op=req["op"], **outcome)
            except (TypeError, ValueError) as exc:  # e.g. a non-finite number in the result
                outcome = exc
        if isinstance(outcome, Cancelled):
            return event("cancelled", ctx.id, stage="running")
        err = classify(outcome)
        trace = "".join(traceback.format_exception(outcome))
        if err.code == "internal":
            log.error("job %s failed:\n%s", ctx.id, trace)
        _release_cuda_memory(err)
        extra = {"traceback": trace} if self.debug else {}
        return error_event(err.code, err.message, ctx.id, **err.extra, **extra)

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            for ctx in self.queue:
                ctx.cancel_event.set()
            self.queue.clear()
            for ctx in self.running:
                ctx.cancel_event.set()
            self.cond.notify_all()
        if self.worker.is_alive():
            self.worker.join(timeout=5.0)


def _release_cuda_memory(err: JobError) -> None:
    if err.code == "out_of_memory":
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def protect_stdout():
    """Keep fd 1 for protocol lines only: return a text stream on a duplicate of it,
    then point fd 1 (and sys.stdout) at stderr so that any other output lands in the log."""
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto
