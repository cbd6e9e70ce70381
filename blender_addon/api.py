"""Kiln for scripts: the same jobs as the panel, as plain functions.

    import kiln                                    # legacy add-on; as an extension:
    # from bl_ext.user_default import kiln
    obj = kiln.api.generate("a red chair with a tall back", seed=3)
    kiln.api.edit(obj, "make it blue")
    kiln.api.regenerate(obj, seed=7)

Every function blocks until the object is in the scene (also in the UI, where the
operators are the non-blocking way) and raises `KilnError` (`.code`, `.message`) on
failure: a bad prompt, a missing model (`model_unavailable`), a dead backend
(`backend_crashed`), a cancelled job, or the timeout.
"""
from __future__ import annotations

import os
import random
import re

import bpy

from . import importer, preferences, tasks
from .client import KilnError, protocol

__all__ = ["KilnError", "generate", "edit", "regenerate", "fit", "import_result", "submit_generate", "submit_edit",
           "submit_regenerate", "submit_fit", "start_backend", "stop_backend", "restart_backend", "backend_status",
           "wait", "configure",
           "cancel", "jobs", "random_seed", "with_colour"]

DEFAULT_TIMEOUT = 900.0


def _manager() -> tasks.Manager:
    if tasks.manager is None:
        raise KilnError("backend_missing", "the Kiln add-on is not registered")
    return tasks.manager


def _resolution(resolution) -> int:
    if resolution in (None, "", "DEFAULT", 0):
        return preferences.default_resolution()
    res = int(resolution)
    if res not in protocol.RESOLUTIONS:
        raise KilnError("bad_request", f"resolution must be one of {list(protocol.RESOLUTIONS)}, got {res}")
    return res


def random_seed() -> int:
    return random.randint(0, 2**31 - 1)


# a colour value in an instruction, as the backend reads one (models/text/colour_value.py)
_HEX = re.compile(r"#([0-9a-f]{6}|[0-9a-f]{3})(?![0-9a-z])", re.IGNORECASE)


def with_colour(instruction: str, rgb) -> str:
    """The instruction naming the sRGB colour `rgb` (3 floats in [0, 1]) as a hex code: in place of
    the colour code it already has, else after it ("make the seat" -> "make the seat #d83a1f"),
    or "make it #d83a1f" when it is empty. The backend paints the code's colour exactly where the
    latent can show it."""
    code = "#" + "".join(f"{round(min(max(float(c), 0.0), 1.0) * 255):02x}" for c in rgb[:3])
    text = instruction.strip()
    if not text:
        return f"make it {code}"
    if _HEX.search(text):
        return _HEX.sub(code, text, count=1)
    return f"{text} {code}"


# ---------------------------------------------------------------- submit (non-blocking)


def submit_generate(prompt: str = "", *, mode: str = "text", front: str = "", back: str = "", seed: int = 0,
                    resolution=None, refine: bool = False, refine_steps: int | None = None, location=None,
                    name: str = "", scene=None, collection=None, select: bool = True,
                    remove_floaters: bool = True, candidates: int | None = None, rebuild: bool = True) -> tasks.Job:
    """Queue a generate job; the object appears when it is done (see `wait`). Images only:
    `refine` optimises the result against the image(s) for `refine_steps` steps (None: the
    backend's default). `remove_floaters=False` keeps small parts floating apart from the asset.
    Text only: `candidates` samples are tried and the first in one piece kept (None: the
    backend's default, 4; 1: the seed's own sample), and one still in pieces is rebuilt whole from
    its front and back views unless `rebuild=False`."""
    scene = scene or bpy.context.scene
    if mode == "text":
        if not prompt.strip():
            raise KilnError("bad_request", "the prompt is empty: describe the asset, e.g. 'a red chair'")
        fields = {"mode": "text", "prompt": prompt.strip(), **_candidate_fields(candidates), "rebuild": bool(rebuild)}
        label = prompt.strip()
    elif mode == "images":
        front = bpy.path.abspath(front) if front else ""
        back = bpy.path.abspath(back) if back else ""
        if not front:
            raise KilnError("bad_request", "image mode needs a front image")
        for path in (front, back):
            if path and not os.path.isfile(path):
                raise KilnError("not_found", f"image not found: {path}")
        fields = {"mode": "images", "front": front, "back": back or None, **_refine_fields(refine, refine_steps)}
        label = os.path.splitext(os.path.basename(front))[0]
    else:
        raise KilnError("bad_request", f"mode must be 'text' or 'images', got {mode!r}")
    fields.update(seed=int(seed), resolution=_resolution(resolution), **_floater_fields(remove_floaters))
    if location is None:
        location = tuple(scene.cursor.location)
    if collection is None:
        ctx_coll = getattr(bpy.context, "collection", None)
        collection = ctx_coll if ctx_coll is not None and bpy.context.scene == scene else scene.collection
    target = {"kind": "new", "scene": scene.name, "collection": collection.name,
              "location": tuple(float(x) for x in location), "select": select,
              "name": name or importer.name_from_prompt(label)}
    return _manager().submit("generate", fields, target, f"Generate {label[:40]}")


def _refine_fields(refine: bool, steps: int | None) -> dict:
    if not refine:
        return {}
    limit = protocol.SCHEMAS["generate"]["refine_steps"]
    if steps is not None and not limit.min <= int(steps) <= limit.max:
        raise KilnError("bad_request", f"refine steps must be in [{limit.min}, {limit.max}], got {steps}")
    return {"refine": True, "refine_steps": None if steps is None else int(steps)}


def _candidate_fields(candidates: int | None) -> dict:
    if candidates is None:
        return {}
    limit = protocol.SCHEMAS["generate"]["candidates"]
    if not limit.min <= int(candidates) <= limit.max:
        raise KilnError("bad_request", f"candidates must be in [{limit.min}, {limit.max}], got {candidates}")
    return {"candidates": int(candidates)}


def _floater_fields(remove_floaters: bool) -> dict:
    """The backend drops floaters from Kiln's own assets by default; min_part 0 keeps every part."""
    return {} if remove_floaters else {"min_part": 0.0}


def submit_edit(obj, instruction: str, *, strength: float = 1.0, seed: int = 0, resolution=None,
                use_mesh: bool = False, remove_floaters: bool = True) -> tasks.Job:
    """Queue an edit of `obj`: from its stored latent when it is a Kiln asset (and `use_mesh`
    is False), else from its current mesh, which the backend fits a latent to first (an edit of
    a fitted mesh keeps all its parts whatever `remove_floaters` says)."""
    if obj is None or obj.type != "MESH":
        raise KilnError("bad_request", "edit needs a mesh object")
    if not instruction.strip():
        raise KilnError("bad_request", "the instruction is empty: say what to change, e.g. 'make it blue'")
    m = _manager()
    uid = importer.ensure_uid(obj)
    if m.jobs_for(uid):
        raise KilnError("bad_request", f"{obj.name} already has a Kiln job in progress")
    if resolution in (None, "", "DEFAULT", 0) and obj.get("kiln_resolution"):
        resolution = int(obj["kiln_resolution"])
    fields = {"instruction": instruction.strip(), "strength": float(strength), "seed": int(seed),
              "resolution": _resolution(resolution), **_floater_fields(remove_floaters)}
    label = f"Edit {obj.name}: {instruction.strip()[:40]}"
    job_id = m.new_id(label)
    latent = obj.get("kiln_latent") or ""
    if latent and os.path.isfile(latent) and not use_mesh:
        fields["asset"] = latent
    else:
        path = os.path.join(preferences.output_root(), "inputs", job_id + ".obj")
        importer.export_obj(obj, path)
        fields["mesh"] = path
        if "up" in protocol.SCHEMAS["edit"]:
            fields["up"] = "z"
    target = {"kind": "replace", "uid": uid, "object": obj.name}
    return m.submit("edit", fields, target, label, job_id=job_id)


def submit_fit(obj, *, fit_steps: int = 60, resolution=None) -> tasks.Job:
    """Queue fitting a Kiln latent to `obj`'s mesh: the mesh is replaced in place by Kiln's
    reconstruction (same frame and scale) and the object becomes a Kiln asset."""
    if obj is None or obj.type != "MESH":
        raise KilnError("bad_request", "fitting needs a mesh object")
    m = _manager()
    uid = importer.ensure_uid(obj)
    if m.jobs_for(uid):
        raise KilnError("bad_request", f"{obj.name} already has a Kiln job in progress")
    label = f"Fit {obj.name}"
    job_id = m.new_id(label)
    path = os.path.join(preferences.output_root(), "inputs", job_id + ".obj")
    importer.export_obj(obj, path)
    fields = {"mesh": path, "up": "z", "fit_steps": int(fit_steps), "resolution": _resolution(resolution)}
    return m.submit("encode", fields, {"kind": "replace", "uid": uid, "object": obj.name}, label, job_id=job_id)


def submit_regenerate(obj, *, seed: int | None = None, resolution=None, remove_floaters: bool = True) -> tasks.Job:
    """Queue the object's prompt again with another seed (random when None), replacing its
    mesh in place."""
    if obj is None or not obj.get("kiln_prompt"):
        raise KilnError("bad_request", "regenerate needs an object generated from a prompt by Kiln")
    m = _manager()
    uid = importer.ensure_uid(obj)
    if m.jobs_for(uid):
        raise KilnError("bad_request", f"{obj.name} already has a Kiln job in progress")
    prompt = obj["kiln_prompt"]
    fields = {"mode": "text", "prompt": prompt, "seed": random_seed() if seed is None else int(seed),
              "resolution": _resolution(resolution or obj.get("kiln_resolution")), **_floater_fields(remove_floaters)}
    target = {"kind": "replace", "uid": uid, "object": obj.name}
    return m.submit("generate", fields, target, f"Regenerate {obj.name}")


# ---------------------------------------------------------------- blocking


def wait(job: tasks.Job, timeout: float | None = DEFAULT_TIMEOUT):
    """Block until the job's object is in the scene; return that object."""
    _manager().wait(job, timeout)
    return bpy.data.objects.get(job.object_name)


def generate(prompt: str = "", *, timeout: float | None = DEFAULT_TIMEOUT, **kw):
    """Generate an asset and return the new object (at the 3D cursor unless `location`)."""
    return wait(submit_generate(prompt, **kw), timeout)


def edit(obj, instruction: str, *, timeout: float | None = DEFAULT_TIMEOUT, **kw):
    """Edit `obj` in place with a text instruction; returns `obj`."""
    return wait(submit_edit(obj, instruction, **kw), timeout)


def regenerate(obj, *, timeout: float | None = DEFAULT_TIMEOUT, **kw):
    """Re-run the object's prompt with another seed, in place; returns `obj`."""
    return wait(submit_regenerate(obj, **kw), timeout)


def fit(obj, *, timeout: float | None = DEFAULT_TIMEOUT, **kw):
    """Make any mesh a Kiln asset (a fitted latent; the mesh becomes its reconstruction)."""
    return wait(submit_fit(obj, **kw), timeout)


def cancel(job_id: str | None = None) -> int:
    m = _manager()
    return m.cancel_all() if job_id is None else int(m.cancel(job_id))


def jobs() -> list[tasks.Job]:
    return list(_manager().jobs.values())


# ---------------------------------------------------------------- backend


def configure(*, python: str | None = None, output_dir: str | None = None, device: str | None = None,
              threads: int | None = None, default_resolution: int | None = None) -> dict:
    """Set the add-on preferences from a script (e.g. a headless batch run). Applies to the
    next backend start. Returns the effective settings."""
    p = preferences.get()
    if python is not None:
        p.python_path = python
    if output_dir is not None:
        p.output_dir = output_dir
    if device is not None:
        p.device = device
    if threads is not None:
        p.threads = int(threads)
    if default_resolution is not None:
        p.default_resolution = str(int(default_resolution))
    return {"python": preferences.interpreter(p)[0], "output_dir": preferences.output_root(p), "device": p.device,
            "threads": p.threads, "default_resolution": int(p.default_resolution)}



def start_backend(wait_ready: bool = True, timeout: float = 120.0) -> dict:
    """Start the backend (if needed) and return its hello: device, models, versions."""
    m = _manager()
    if not m.backend.alive:
        m.start_backend()
    if wait_ready:
        import time

        deadline = time.monotonic() + timeout
        while m.backend.state == "starting" and time.monotonic() < deadline:
            ev = m.backend.wait_event(0.2)
            if ev is not None:
                m.handle(ev)
        if m.backend.state != "ready":
            raise KilnError("backend_start_failed", m.backend.error or f"the backend is {m.backend.state}")
    return dict(m.backend.info)


def stop_backend() -> None:
    _manager().stop_backend(wait=5.0)


def restart_backend(wait_ready: bool = True) -> dict:
    m = _manager()
    m.restart_backend()
    return start_backend(wait_ready)


def backend_status() -> dict:
    m = _manager()
    return {"state": m.status(), "pid": m.backend.pid, "error": m.backend.error, "log": m.backend.log_path,
            "python": m.backend.python, "device": m.backend.info.get("device"),
            "models": m.backend.info.get("models", [])}


# ---------------------------------------------------------------- files


def import_result(path: str, *, location=None, name: str = "", collection=None):
    """Import a finished result (a job folder, or its mesh.kmesh), e.g. one written by
    `python -m backend generate`, as a Kiln object with its metadata."""
    path = os.path.abspath(bpy.path.abspath(path))
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    mesh_file = path if os.path.isfile(path) else os.path.join(folder, protocol.MESH_FILE_NAME)
    try:
        arrays = protocol.read_kmesh(mesh_file)
    except protocol.MeshFileError as exc:
        raise KilnError("bad_input", str(exc)) from None
    from .client import read_latent_metadata

    latent = os.path.join(folder, "latent.safetensors")
    meta = read_latent_metadata(latent) if os.path.isfile(latent) else {}
    op = meta.get("op") or "generate"
    request = {k: meta.get(k) for k in ("prompt", "seed", "resolution", "mode", "front", "back")
               if meta.get(k) is not None}
    if meta.get("normalisation"):
        request["mesh"] = meta.get("source_mesh") or mesh_file
    job = tasks.Job(os.path.basename(folder), op, f"Import {os.path.basename(folder)}", request, {"kind": "new"})
    scene = bpy.context.scene
    transform, frame = importer.result_frame(job, meta)
    obj = importer.create_object(name or importer.name_from_prompt(meta.get("prompt") or "", os.path.basename(folder)),
                                 arrays, transform, collection or scene.collection,
                                 tuple(scene.cursor.location) if location is None else location,
                                 view_layer=bpy.context.view_layer)
    result = {"latent": latent if os.path.isfile(latent) else "", "mesh_file": mesh_file, "dir": folder,
              "glb": os.path.join(folder, "asset.glb") if os.path.isfile(os.path.join(folder, "asset.glb")) else ""}
    importer.store_metadata(obj, job, result, meta, frame)
    return obj
