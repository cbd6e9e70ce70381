"""The job queue as the artist sees it, and the bridge from backend events to the scene.

One `Manager` per Blender session owns the backend child and the list of jobs
(queued / running / done / failed / cancelled). In the UI a `bpy.app.timers` callback
drains events within a small time budget and builds at most one result per tick, so the
interface never waits on the backend; in background mode (`blender -b`) `wait()` runs the
same code in a blocking loop, so operators and scripts get their object back directly.
"""
from __future__ import annotations

import collections
import re
import sys
import time
from dataclasses import dataclass, field

import bpy

from . import client, importer, preferences
from .client import KilnError

FINAL = ("done", "failed", "cancelled")
TICK_ACTIVE = 0.05   # seconds between timer ticks while jobs are in flight
TICK_IDLE = 0.5      # while the backend idles (to notice it dying)
DRAIN_BUDGET = 0.015  # seconds of event handling per tick


@dataclass
class Job:
    id: str
    op: str
    label: str
    request: dict
    target: dict
    gen: int = 0
    state: str = "queued"
    position: int = 0
    stage: str = ""
    fraction: float = 0.0
    message: str = ""
    error_code: str = ""
    warnings: list = field(default_factory=list)
    result: dict | None = None
    object_name: str = ""
    pending_import: bool = False
    build: object = None            # importer.MeshBuild while the result's mesh is being built
    created: float = field(default_factory=time.time)
    finished: float = 0.0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    @property
    def active(self) -> bool:
        return not self.final or self.pending_import

    def summary(self) -> str:
        if self.state == "running":
            return f"{self.stage or 'starting'} {self.fraction * 100:.0f}%"
        if self.state == "queued":
            return f"queued ({self.position})" if self.position else "queued"
        if self.pending_import:
            return self.message
        if self.state == "done":
            return f"done: {self.object_name}" if self.object_name else "done"
        return self.message or self.state


def _slug(text: str, n: int = 28) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n].strip("-") or "job"


class Manager:
    def __init__(self):
        self.backend = client.Backend()
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self.ticks: collections.deque = collections.deque(maxlen=20000)  # (seconds, kind)
        self.last_report: tuple[str, str] = ("INFO", "")
        self.synchronous = bool(bpy.app.background)
        self.on_event = None  # optional hook(event) for scripts and tests
        self.imported = 0     # results brought into the scene
        self._count = 0

    # ------------------------------------------------------------ backend

    def status(self) -> str:
        st = self.backend.state
        if st == "ready" and any(not j.final and j.gen == self.backend.generation for j in self.jobs.values()):
            return "busy"
        return st

    def start_backend(self) -> None:
        p = preferences.get()
        python, where = preferences.interpreter(p)
        if not python:
            self.backend.state, self.backend.error = "stopped", where
            raise KilnError("backend_not_configured", where)
        self.backend.start(python, preferences.output_root(p), p.device, p.threads)
        ensure_timer()

    def ensure_backend(self) -> None:
        if self.backend.alive:
            return
        if not preferences.get().auto_start:
            code = "backend_crashed" if self.backend.state == "crashed" else "backend_stopped"
            raise KilnError(code, f"the backend is {self.backend.state}: press Start in the Kiln panel "
                                  "(or turn on Start Automatically in the add-on preferences)")
        self.start_backend()

    def stop_backend(self, wait: float = 0.0) -> None:
        self._abandon("cancelled", "the backend was stopped")
        self.backend.stop(wait)

    def restart_backend(self) -> None:
        self._abandon("cancelled", "the backend was restarted")
        self.backend.stop()
        self.start_backend()

    def _abandon(self, state: str, message: str) -> None:
        for job in self.jobs.values():
            if not job.final:
                self._finish(job, state, message, code="cancelled" if state == "cancelled" else "backend_crashed")

    # ------------------------------------------------------------ jobs

    def new_id(self, label: str) -> str:
        self._count += 1
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{self._count:03d}-{_slug(label)}"

    def submit(self, op: str, fields: dict, target: dict, label: str, job_id: str | None = None) -> Job:
        """Send a job (starting the backend when needed). The job's folder under the output
        root is named after its id, which is unique across sessions."""
        self.ensure_backend()
        job_id = job_id or self.new_id(label)
        fields = {**fields, "out": job_id}
        fields = {k: v for k, v in fields.items() if v is not None}
        job = Job(job_id, op, label, dict(fields), target, gen=self.backend.generation)
        self.jobs[job_id] = job
        try:
            self.backend.send(op, job_id, **{k: v for k, v in fields.items()})
        except KilnError as exc:
            self._finish(job, "failed", exc.message, code=exc.code)
            raise
        ensure_timer()
        return job

    def cancel(self, job_id: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.final:
            return False
        if self.backend.alive and job.gen == self.backend.generation:
            self.backend.send("cancel", self.backend.new_id("cancel"), target=job_id)
            job.message = "cancelling"
        else:
            self._finish(job, "cancelled", "cancelled")
        return True

    def cancel_all(self) -> int:
        return sum(self.cancel(j.id) for j in list(self.jobs.values()) if not j.final)

    def clear_finished(self) -> int:
        gone = [k for k, j in self.jobs.items() if j.final and not j.pending_import]
        for k in gone:
            del self.jobs[k]
        return len(gone)

    def running_job(self) -> Job | None:
        running = [j for j in self.jobs.values() if j.state == "running"]
        if running:
            return running[0]
        return next((j for j in self.jobs.values() if not j.final), None)

    def jobs_for(self, uid: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.target.get("uid") == uid and j.active]

    # ------------------------------------------------------------ events

    def pump(self, budget_s: float = DRAIN_BUDGET) -> bool:
        events = self.backend.poll(budget_s=budget_s)
        for ev in events:
            self.handle(ev)
        return bool(events)

    def handle(self, ev: dict) -> None:
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception as exc:  # noqa: BLE001 - a script hook must not break the queue
                print(f"Kiln: event hook failed: {exc}", file=sys.stderr)
        if self.backend.handle_control(ev):
            return
        if ev["event"] == "_exit":
            if self.backend.state == "crashed":
                failed = [j for j in self.jobs.values() if not j.final and j.gen == ev["_gen"]]
                for job in failed:
                    self._finish(job, "failed", self.backend.error, code="backend_crashed")
                what = f"; {len(failed)} job(s) lost" if failed else ""
                self.report("ERROR", f"Kiln: {self.backend.error}{what}. Restart it from the Kiln panel; "
                                     "your scene is unchanged.")
            return
        job = self.jobs.get(ev.get("id"))
        if job is None or job.final:
            if job is None and ev["event"] == "error" and not str(ev.get("id") or "").startswith("cancel-"):
                print(f"Kiln: backend error: {_error_text(ev)}", file=sys.stderr)
            return
        kind = ev["event"]
        if kind == "accepted":
            job.position = int(ev.get("position", 0))
            job.state = "queued"
        elif kind == "progress":
            job.state = "running"
            job.stage, job.fraction = ev.get("stage", ""), float(ev.get("fraction", 0.0))
            job.message = ev.get("message", "")
        elif kind == "cancelled":
            self._finish(job, "cancelled", "cancelled")
        elif kind == "error":
            self._finish(job, "failed", _error_text(ev), code=ev.get("code", "internal"))
            self.report("ERROR", f"Kiln: {job.label} failed: {_error_text(ev)}")
        elif kind == "result":
            job.result = ev
            job.warnings = list(ev.get("warnings") or [])
            job.state, job.fraction, job.stage = "done", 1.0, "done"
            job.finished = time.time()
            job.pending_import = True
            job.message = "importing"

    def _finish(self, job: Job, state: str, message: str, code: str = "") -> None:
        job.state, job.message, job.error_code = state, message, code
        job.finished = time.time()
        job.pending_import = False

    def import_ready(self, max_jobs: int | None = None, staged: bool = False) -> list[Job]:
        """Bring finished jobs' results into the scene (main thread); returns the jobs worked
        on. `staged` (the UI timer): one build stage of one job per call, so no single tick
        carries a whole mesh build. A target in Edit Mode waits."""
        touched = []
        for job in list(self.jobs.values()):
            if max_jobs is not None and len(touched) >= max_jobs:
                break
            if not job.pending_import:
                continue
            try:
                finished = self._apply(job, staged)
                touched.append(job)
                if finished:
                    job.pending_import = False
                    job.message = ""
            except importer.DeferImport as exc:
                job.message = str(exc)
            except Exception as exc:  # noqa: BLE001 - the job fails, Blender keeps going
                _discard_build(job)
                job.pending_import = False
                self._finish(job, "failed", f"could not import the result: {exc}", code="bad_input")
                self.report("ERROR", f"Kiln: {job.label}: could not import the result: {exc}")
            if staged and touched:
                break
        return touched

    def _apply(self, job: Job, staged: bool = False) -> bool:
        """One step (staged) or all of importing a job's result; True once it is in the scene."""
        res = job.result
        arrays = res.get("_arrays")
        if arrays is None:
            raise importer.ImportProblem(res.get("_arrays_error") or "the result has no mesh file "
                                         "(is the backend older than the add-on?)")
        meta = res.get("_latent_meta") or {}
        tgt = job.target
        if tgt["kind"] == "replace":
            obj = importer.find_object(tgt.get("uid", ""))
            if obj is None:
                raise importer.ImportProblem(f"the object {tgt.get('object', '')!r} no longer exists; "
                                             f"the result is in {res.get('dir')}")
            importer.check_replaceable(obj)
            transform, frame = importer.result_frame(job, meta, obj)
            name = obj.data.name
            if transform is None and importer.has_same_mesh(obj.data, arrays):
                importer.paint_in_place(obj, arrays)  # a recolour of the object's own mesh
                return self._imported(job, obj, frame)
        else:
            transform, frame = importer.result_frame(job, meta)
            name = tgt.get("name") or "Kiln Asset"
        if job.build is None:
            job.build = importer.MeshBuild(name, arrays, transform)
        if staged:
            if not job.build.step():
                job.message = "importing"
                return False
        else:
            job.build.run()
        mesh, job.build = job.build.mesh, None
        if tgt["kind"] == "replace":
            importer.replace_mesh(obj, None, None, mesh=mesh)
        else:
            scene = bpy.data.scenes.get(tgt.get("scene", "")) or _current_scene()
            coll = bpy.data.collections.get(tgt.get("collection") or "")
            if coll is None or coll.name not in _scene_collections(scene):
                coll = scene.collection
            view_layer = _view_layer(scene)
            obj = importer.create_object(name, None, None, coll, tgt.get("location", (0.0, 0.0, 0.0)),
                                         view_layer=view_layer if tgt.get("select", True) else None, mesh=mesh)
        return self._imported(job, obj, frame)

    def _imported(self, job: Job, obj, frame: dict) -> bool:
        """Metadata, undo step and reports once a result is in the scene as `obj`."""
        res = job.result
        importer.store_metadata(obj, job, res, res.get("_latent_meta") or {}, frame)
        job.object_name = obj.name
        self.imported += 1
        if not self.synchronous:
            _undo_push(f"Kiln: {job.label}")
        removed = int((res.get("mesh") or {}).get("removed_parts") or 0)
        if removed:
            self.report("INFO", f"Kiln: {job.label}: removed {removed} small floating part(s) "
                                "(turn off Remove Floaters to keep them)")
        for w in job.warnings:
            self.report("WARNING", f"Kiln: {w}")
        return True

    def wait(self, job: Job, timeout: float | None = None) -> Job:
        """Block until `job` is finished and imported (background mode, scripts). Raises
        KilnError for failures, cancellation, a dead backend or the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.active:
            ev = self.backend.wait_event(0.2)
            if ev is not None:
                self.handle(ev)
            self.import_ready()
            if job.pending_import:  # deferred (target in Edit Mode): nothing will change that here
                raise KilnError("bad_input", f"{job.label}: {job.message}")
            if deadline is not None and time.monotonic() > deadline and job.active:
                self.cancel(job.id)
                raise KilnError("timeout", f"{job.label}: no result after {timeout:.0f} s (cancelled)")
        if job.state == "failed":
            raise KilnError(job.error_code or "internal", job.message)
        if job.state == "cancelled":
            raise KilnError("cancelled", f"{job.label} was cancelled")
        return job

    # ------------------------------------------------------------ reporting

    def report(self, level: str, message: str) -> None:
        self.last_report = (level, message)
        print(f"{message}", file=sys.stderr)
        if not self.synchronous:
            _notify(level, message)

    # ------------------------------------------------------------ timer

    def tick(self) -> float | None:
        t0 = time.perf_counter()
        changed = self.pump()
        t1 = time.perf_counter()
        imported = self.import_ready(max_jobs=1, staged=True)
        t2 = time.perf_counter()
        self.ticks.append((t1 - t0, "drain"))
        if imported:
            self.ticks.append((t2 - t1, "import"))
        self.ticks.append((t2 - t0, "tick"))
        if changed or imported:
            _show_progress(self.running_job())
            _tag_redraw()
        if any(j.active for j in self.jobs.values()) or self.backend.state == "starting":
            return 0.0 if imported and any(j.pending_import for j in self.jobs.values()) else TICK_ACTIVE
        if self.backend.alive:
            return TICK_IDLE
        _tag_redraw()
        return None  # nothing to watch: the timer ends (ensure_timer restarts it)

    def tick_stats(self) -> dict:
        out = {}
        for kind in ("drain", "import", "tick"):
            xs = [d for d, k in self.ticks if k == kind]
            out[kind] = {"count": len(xs), "max_ms": round(max(xs, default=0.0) * 1000, 3),
                         "mean_ms": round(sum(xs) / len(xs) * 1000, 3) if xs else 0.0}
        out["results_imported"] = self.imported
        return out


def _discard_build(job: Job) -> None:
    """Remove the half-built mesh of a result that will not be imported."""
    build, job.build = job.build, None
    mesh = bpy.data.meshes.get(build.mesh_name) if build is not None and build.mesh_name else None
    if mesh is not None and mesh.users == 0:
        bpy.data.meshes.remove(mesh)


def _error_text(ev: dict) -> str:
    return f"{ev.get('message', 'unknown error')} [{ev.get('code', 'internal')}]"


def _current_scene():
    return bpy.context.scene or bpy.data.scenes[0]


def _view_layer(scene):
    win = getattr(bpy.context, "window", None)
    if win is not None and win.scene == scene:
        return win.view_layer
    if bpy.context.scene == scene and getattr(bpy.context, "view_layer", None) is not None:
        return bpy.context.view_layer
    return scene.view_layers[0] if len(scene.view_layers) else None


def _scene_collections(scene) -> set:
    names, stack = set(), [scene.collection]
    while stack:
        c = stack.pop()
        names.add(c.name)
        stack.extend(c.children)
    return names


def _any_window():
    wm = bpy.context.window_manager
    return wm.windows[0] if wm is not None and len(wm.windows) else None


def _undo_push(message: str) -> None:
    win = _any_window()
    if win is None:
        return
    try:
        with bpy.context.temp_override(window=win):
            bpy.ops.ed.undo_push(message=message)
    except (RuntimeError, AttributeError) as exc:
        print(f"Kiln: no undo step for {message!r}: {exc}", file=sys.stderr)


def _notify(level: str, message: str) -> None:
    """A report in the status bar and the Info log, from a timer (no operator is running)."""
    win = _any_window()
    if win is None:
        return
    try:
        with bpy.context.temp_override(window=win):
            bpy.ops.kiln.notify("EXEC_DEFAULT", level=level, message=message[:1000])
    except (RuntimeError, AttributeError):
        pass


def _show_progress(job) -> None:
    """Blender < 4.0 draws the progress bar from a window-manager property."""
    wm = bpy.context.window_manager
    if wm is not None and hasattr(wm, "kiln_progress"):
        value = round((job.fraction if job is not None else 0.0) * 100.0, 1)
        if abs(wm.kiln_progress - value) >= 0.1:
            wm.kiln_progress = value


def _tag_redraw() -> None:
    wm = bpy.context.window_manager
    if wm is None:
        return
    for win in wm.windows:
        for area in win.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


# ---------------------------------------------------------------- the timer

manager: Manager | None = None


def _tick():
    if manager is None:
        return None
    try:
        return manager.tick()
    except Exception as exc:  # noqa: BLE001 - never let the timer die silently
        print(f"Kiln: timer error: {exc!r}", file=sys.stderr)
        import traceback

        traceback.print_exc()
        return TICK_IDLE


def ensure_timer() -> None:
    if manager is None or manager.synchronous:
        return
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TICK_ACTIVE, persistent=True)


def register() -> None:
    global manager
    manager = Manager()


def unregister() -> None:
    global manager
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    if manager is not None:
        manager.backend.stop(wait=3.0)
    manager = None
