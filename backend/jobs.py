"""Job runners: one function per op, shared by the server, the CLI and batch runs.

A runner gets a JobContext (progress, cancel check, the model registry, the output
root) and the validated request, and returns the result event's fields.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable

from models.mesh import Cancelled

from . import __version__
from .errors import JobError
from .protocol import MESH_FILE_NAME
from .registry import Registry
from .results import OutputRoot, save_latent, save_mesh_arrays

Emit = Callable[[str, dict], None]  # (event type, fields)


@dataclass
class JobContext:
    id: str
    registry: Registry
    output: OutputRoot
    emit: Emit
    cancel_event: threading.Event = field(default_factory=threading.Event)
    min_interval: float = 0.05
    _last: float = 0.0
    _stage: str = ""
    timings: dict = field(default_factory=dict)
    out_dir: str | None = None

    def prepare_output(self, req: dict) -> str:
        """Resolve (and create) the job's result folder before any model work, so a bad
        `out` is refused at once instead of after the compute."""
        self.out_dir = self.output.job_dir(self.id, req.get("out"))
        return self.out_dir

    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def check_cancel(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()

    def progress(self, fraction: float, stage: str, message: str = "") -> None:
        """Throttled progress events (always sent on a stage change and at fraction 1)."""
        now = time.monotonic()
        if stage == self._stage and fraction < 1.0 and now - self._last < self.min_interval:
            return
        self._last, self._stage = now, stage
        self.emit("progress", {"stage": stage, "fraction": round(min(max(fraction, 0.0), 1.0), 4),
                               "message": message})

    def stage(self, start: float, end: float, stage: str) -> Callable[[float, str], None]:
        """A progress callback mapping a sub-task's 0..1 onto [start, end] of the job."""
        return lambda f, msg="": self.progress(start + (end - start) * f, stage, msg)

    @contextmanager
    def timed(self, name: str):
        """Add the wall time of the block to timings[name]."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t, 4)


def _write_outputs(ctx: JobContext, req: dict, mesh, latent, meta: dict, reference=None, cuts=()) -> dict:
    from models.mesh import write_glb

    out_dir = ctx.out_dir or ctx.prepare_output(req)
    with ctx.timed("write"):
        glb = os.path.join(out_dir, "asset.glb")
        write_glb(mesh, glb)
        mesh_file = os.path.join(out_dir, MESH_FILE_NAME)
        save_mesh_arrays(mesh_file, mesh)
        latent_path = os.path.join(out_dir, "latent.safetensors")
        save_latent(latent_path, latent, {"backend": __version__, **meta}, reference=reference, cuts=cuts)
        preview = None
        if req.get("preview"):
            from models.preview import render_preview, save_png

            preview = os.path.join(out_dir, "preview.png")
            save_png(render_preview(mesh, size=384, samples=200_000), preview)
    return {"dir": out_dir, "glb": glb, "mesh_file": mesh_file, "latent": latent_path, "preview": preview,
            "mesh": mesh.stats}


def _latent_of_mesh_file(ctx: JobContext, req: dict, model, timing: str, span: tuple[float, float]):
    """Read the request's mesh, normalise it into the cube and encode it (fitting when
    `fit_steps` > 0): (source mesh, latent, fit IoU to 4 decimals or None)."""
    from models.meshio import load_mesh, normalise
    from models.metrics import volume_iou
    from models.triplane.inference import FIT_UNIFORM, LatentField, encode_source_mesh

    ctx.progress(0.0, "read", "reading mesh")
    with ctx.timed("read"):
        src = normalise(load_mesh(req["mesh"]), req.get("up"))
    ctx.check_cancel()
    with ctx.timed(timing):
        latent, samples = encode_source_mesh(model, src, fit_steps=req["fit_steps"], seed=req["seed"],
                                             progress=ctx.stage(*span, "fit"), cancel=ctx.cancelled)
    fit_iou = None
    if samples is not None:
        # volume IoU with the mesh on the fit's uniform samples, the measure of the autoencoder card
        # (the near-surface samples, two thirds of them, would report a much harsher figure)
        points, sdf = samples[0][-FIT_UNIFORM:], samples[1][-FIT_UNIFORM:]
        fit_iou = round(float(volume_iou(LatentField(model, latent).sdf(points), sdf)), 4)
    return src, latent, fit_iou


def _min_part(req: dict, generated: bool) -> float:
    """The share of the largest part below which disconnected parts are dropped: the request's,
    else FLOATER_MIN_PART for Kiln's own assets (every asset of the world it learnt from is one
    piece, so a small separate blob is a sampling floater) and 0 for latents fitted to a user's
    mesh, whose separate parts may be meant (Suzanne's eyes)."""
    from models.mesh import FLOATER_MIN_PART

    if req.get("min_part") is not None:
        return float(req["min_part"])
    return FLOATER_MIN_PART if generated else 0.0


def run_encode(ctx: JobContext, req: dict) -> dict:
    """Any mesh -> latent (encode + optional fit) -> reconstructed mesh in the mesh's own frame."""
    from models.triplane.inference import latent_to_mesh

    with ctx.timed("load_model"):
        model = ctx.registry.autoencoder()
    src, latent, fit_iou = _latent_of_mesh_file(ctx, req, model, "encode", (0.05, 0.7))
    with ctx.timed("mesh"):
        mesh = latent_to_mesh(model, latent, req["resolution"], progress=ctx.stage(0.7, 0.95, "mesh"),
                              cancel=ctx.cancelled)
    mesh.vertices = src.normalisation.to_original_z_up(mesh.vertices)
    meta = {"op": "encode", "model": "kiln-triplane-ae", "model_config": model.cfg.to_dict(),
            "source_mesh": os.path.abspath(req["mesh"]), "normalisation": src.normalisation.to_dict(),
            "seed": req["seed"], "fit_steps": req["fit_steps"], "resolution": req["resolution"],
            "fit_iou": fit_iou}
    result = _write_outputs(ctx, req, mesh, latent, meta)
    result["fit_iou"] = fit_iou
    return result


def run_generate(ctx: JobContext, req: dict) -> dict:
    from .adapters import is_adapter, run_adapter_generate

    if is_adapter(req.get("model")):  # a published checkpoint (Shap-E, TripoSR-format)
        return run_adapter_generate(ctx, req)
    if req["mode"] == "images":
        return run_generate_images(ctx, req)
    return run_generate_text(ctx, req)


def text_batch_key(req: dict) -> tuple | None:
    """Text jobs with equal keys can share one batched sampling pass (None: not batchable)."""
    if req["op"] != "generate" or req["mode"] != "text" or req.get("model") not in (None, "kiln-text"):
        return None
    return (req.get("model"), req["steps"], req["guidance"], req.get("candidates"), req.get("rebuild"))


def run_generate_text(ctx: JobContext, req: dict) -> dict:
    outcome = run_text_batch([ctx], [req])[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def run_text_batch(ctxs: list[JobContext], reqs: list[dict],
                   on_done: Callable[[int, object], None] | None = None) -> list:
    """Sample the latents of several text jobs in one batch, then mesh and write each.
    Returns one outcome per job: its result dict or the exception it ended with; `on_done`
    sees each outcome as soon as that job is finished (so results stream)."""
    from models.text.candidates import CandidateConfig, generate_whole
    from models.text.pipeline import (
        DEFAULT_GUIDANCE,
        DEFAULT_GUIDANCE_UNTIL,
        DEFAULT_STEPS,
    )
    from models.triplane.inference import latent_to_mesh

    t0 = time.perf_counter()
    outcomes: list = [None] * len(ctxs)

    def finish(i: int, outcome) -> None:
        if isinstance(outcome, dict):
            ctxs[i].timings["total"] = round(time.perf_counter() - t0, 4)
            outcome = {**outcome, "timings": dict(ctxs[i].timings)}
        outcomes[i] = outcome
        if on_done is not None:
            on_done(i, outcome)

    live = []  # jobs whose output folder is valid; the others fail alone, before any sampling
    for i, (ctx, req) in enumerate(zip(ctxs, reqs)):
        try:
            ctx.prepare_output(req)
            live.append(i)
        except BaseException as exc:  # noqa: BLE001
            finish(i, exc)
    if not live:
        return outcomes
    lead = ctxs[live[0]]
    try:
        with lead.timed("load_model"):
            ae = lead.registry.autoencoder()
            gen = lead.registry.get("text", reqs[0].get("model"))
        steps = reqs[0]["steps"] or DEFAULT_STEPS
        guidance = DEFAULT_GUIDANCE if reqs[0]["guidance"] is None else float(reqs[0]["guidance"])
        for i in live:
            ctxs[i].progress(0.0, "text", "encoding the prompt")

        def progress(f: float, msg: str) -> None:
            for i in live:
                ctxs[i].progress(0.02 + 0.43 * f, "sample", msg)

        candidates = CandidateConfig()
        if reqs[0].get("candidates") is not None:
            candidates = replace(candidates, candidates=int(reqs[0]["candidates"]))
        if reqs[0]["guidance"] is not None:  # a guidance asked for is kept for every candidate
            candidates = replace(candidates, retry_guidance=None)
        rebuild, rebuild_warnings = _text_rebuilder(lead, ae, candidates, reqs[0].get("rebuild") is not False)
        t = time.perf_counter()
        chosen = generate_whole(gen, ae, [reqs[i]["prompt"] for i in live], [reqs[i]["seed"] for i in live],
                                candidates, steps=steps, guidance=guidance, progress=progress,
                                cancel=lambda: all(ctxs[i].cancelled() for i in live), rebuild=rebuild)
        latents, warnings = chosen.latents, chosen.warnings
        sample_s = round(time.perf_counter() - t, 4)
    except BaseException as exc:  # noqa: BLE001 - every job of the batch ends the same way
        for i in live:
            finish(i, exc)
        return outcomes
    for k, i in enumerate(live):
        ctx, req = ctxs[i], reqs[i]
        try:
            ctx.check_cancel()
            ctx.timings.update({"load_model": lead.timings.get("load_model", 0.0), "sample": sample_s})
            min_part = _min_part(req, generated=True)
            with ctx.timed("mesh"):
                # refined from the one-piece check's grid where there was one (the same mesh, sooner)
                mesh = latent_to_mesh(ae, latents[k:k + 1], req["resolution"], progress=ctx.stage(0.45, 0.95, "mesh"),
                                      cancel=ctx.cancelled, min_part=min_part, start=chosen.grids[k])
            job_warnings = [*warnings[k], *(rebuild_warnings if mesh.parts > 1 else []),
                            *_pieces_warnings(mesh, "; try another seed or a fuller prompt")]
            kept = {"sample_seed": chosen.sample_seeds[k], "sample_kept": chosen.kept[k],
                    "sample_guidance": guidance if chosen.sample_guidance[k] is None else chosen.sample_guidance[k],
                    "samples_tried": chosen.tried[k], "rebuilt": chosen.rebuilt[k]}
            meta = {"op": "generate", "mode": "text", "model": "kiln-text",
                    "model_version": gen.model.meta.get("version"), "autoencoder_config": ae.cfg.to_dict(),
                    "prompt": req["prompt"], "seed": req["seed"], "steps": steps, "guidance": guidance,
                    "guidance_until": DEFAULT_GUIDANCE_UNTIL, "candidates": candidates.candidates, **kept,
                    "resolution": req["resolution"],
                    "min_part": min_part, "warnings": job_warnings}
            result = _write_outputs(ctx, req, mesh, latents[k:k + 1], meta)
            finish(i, {**result, "warnings": job_warnings, "batch_size": len(live), **kept})
        except BaseException as exc:  # noqa: BLE001
            finish(i, exc)
    return outcomes


BACK_MISMATCH_IOU = 0.5  # mirrored back vs front silhouette overlap below which the back looks like another object


def run_generate_images(ctx: JobContext, req: dict) -> dict:
    """Front (+ back) image -> latent (feed-forward, then optional GTR-style refinement) -> mesh.
    The images are read and checked before the model loads, so a bad file fails at once and
    without the weights."""
    from models.triplane.inference import latent_to_mesh

    ctx.registry.entry_for("images", req.get("model"))  # an unknown model id: model_unavailable
    ctx.progress(0.0, "images", "reading images")
    with ctx.timed("read"):
        images = {view: _read_view(req[view], view) for view in ("front", "back") if req.get(view)}
    ctx.check_cancel()
    with ctx.timed("load_model"):
        rec = ctx.registry.get("images", req.get("model"))  # model_unavailable before the decoder loads
        ae = ctx.registry.autoencoder()
    steps = _refine_steps(req)
    with ctx.timed("reconstruct"):
        views = rec.prepare_views(images["front"], images.get("back"))
        warnings = _back_view_warnings(views)
        latent, info = rec.reconstruct_views(views, refine_steps=steps, progress=_reconstruct_progress(ctx),
                                             cancel=ctx.cancelled)
        warnings += _outline_warnings(info["outline_iou"])
    ctx.check_cancel()
    min_part = _min_part(req, generated=True)
    with ctx.timed("mesh"):
        mesh = latent_to_mesh(ae, latent, req["resolution"], progress=ctx.stage(0.6, 0.95, "mesh"),
                              cancel=ctx.cancelled, min_part=min_part)
    warnings += _pieces_warnings(mesh)
    refine = info.get("refine")
    meta = {"op": "generate", "mode": "images", "model": "kiln-images", "model_version": rec.model.meta.get("version"),
            "autoencoder_config": ae.cfg.to_dict(), "front": os.path.abspath(req["front"]),
            "back": os.path.abspath(req["back"]) if req.get("back") else None, "views": info["views"],
            "refine_steps": steps, "refine": refine, "outline_iou": info["outline_iou"], "seed": req["seed"],
            "resolution": req["resolution"], "min_part": min_part, "warnings": warnings}
    result = _write_outputs(ctx, req, mesh, latent, meta)
    return {**result, "views": info["views"], "outline_iou": info["outline_iou"], "warnings": warnings,
            **({"refine": refine} if refine else {})}


def _read_view(path: str, view: str):
    """One input image as a float array (H, W, 3|4) in [0, 1], checked to show an object;
    unusable files are bad_input (missing ones not_found), naming the view."""
    from models.adapters.images import ImageInputError, image_array, load_image
    from models.images.preprocess import NoObjectError, crop_box, object_alpha

    try:
        image = image_array(load_image(path))
        crop_box(object_alpha(image))  # raises NoObjectError on a plain background
    except (ImageInputError, NoObjectError) as exc:
        raise JobError(exc.code, f"{view} image: {exc}") from None
    return image


def _back_view_warnings(views: dict) -> list[str]:
    """A back image whose silhouette, mirrored, barely overlaps the front's is probably another
    object or another view: the model still fuses both, so say so rather than fail.
    `views`: the prepared images (ImagesToAsset.prepare_views), alpha in channel 3."""
    if "back" not in views:
        return []
    front = views["front"][0, 3].cpu().numpy() > 0.5
    back = views["back"][0, 3].cpu().numpy()[:, ::-1] > 0.5  # seen from behind: left and right swap
    iou = float((front & back).sum()) / max(1, int((front | back).sum()))
    if iou >= BACK_MISMATCH_IOU:
        return []
    return [f"the back image's outline does not match the front's (overlap {iou:.2f} after mirroring): is it the "
            "same object seen from behind? Both views were used; the result may mix the two"]


def _text_rebuilder(ctx: JobContext, ae, candidates, wanted: bool) -> tuple:
    """(the rebuild callable `generate_whole` takes or None, warnings for a sample left in pieces).
    Rebuilding needs the image reconstructor: without its weights text jobs go on without it."""
    from models.text.rebuild import rebuilder

    if not wanted:
        return None, []
    try:
        with ctx.timed("load_model"):
            images = ctx.registry.get("images")
    except JobError as exc:
        return None, [f"a sample in pieces could not be rebuilt whole: the image reconstructor is unavailable "
                      f"({exc.message})"]
    return rebuilder(images, ae, candidates.min_part), []


def _pieces_warnings(mesh, hint: str = "") -> list[str]:
    """A generated asset still in several pieces after the floater clean-up (`Mesh.parts`): every
    asset the bundled models learned from is one piece, so say so rather than hand it over silently."""
    if mesh.parts < 2:
        return []
    return [f"the result is in {mesh.parts} separate pieces, each too large for the floater clean-up: the bundled "
            "model often breaks thin parts off (the legs or top of a table, chair, stool or lamp)" + hint]


def _outline_warnings(outline_iou: dict) -> list[str]:
    """A result whose outline barely overlaps an input's (`ImagesToAsset.outline_agreement`): say so, naming the view."""
    from models.images.pipeline import OUTLINE_WARN_IOU

    return [f"the result matches the {view} image's outline poorly (silhouette IoU {iou:.2f} < {OUTLINE_WARN_IOU}): "
            "the image may show something unlike the objects the bundled model knows, or not one centred object"
            for view, iou in outline_iou.items() if iou < OUTLINE_WARN_IOU]


def _refine_steps(req: dict) -> int:
    """0 without refinement; else the request's steps or the image pipeline's default."""
    if not req.get("refine"):
        return 0
    from models.images.pipeline import DEFAULT_REFINE_STEPS

    return req.get("refine_steps") or DEFAULT_REFINE_STEPS


def _reconstruct_progress(ctx: JobContext) -> Callable[[float, str], None]:
    """The pipeline's 0..1 (feed-forward, then refinement steps) onto [0.1, 0.6] of the job."""
    def progress(fraction: float, message: str = "") -> None:
        stage = "refine" if message.startswith("refining") else "reconstruct"
        ctx.progress(0.1 + 0.5 * fraction, stage, message)
    return progress


def _edit_source(ctx: JobContext, req: dict, ae):
    """What an edit starts from: the latent to edit, the reference latent its result is
    composited over (where the chain of edits started), the user's mesh as a field when the
    chain started from one (shown wherever the edit does not act), lineage metadata, the frame
    to return the mesh in, the fit IoU and warnings. A mesh file is normalised into the cube
    and a latent fitted to it first."""
    from models.edit.composite import mesh_surface
    from models.meshio import Normalisation

    from .results import load_cuts, load_latent_with_reference

    if not req["asset"]:
        src, latent, fit_iou = _latent_of_mesh_file(ctx, req, ae, "fit", (0.02, 0.5))
        with ctx.timed("surface"):
            surface = mesh_surface(src, req["seed"], check=ctx.check_cancel)
        lineage = {"source_mesh": os.path.abspath(req["mesh"]), "source_mesh_sha256": _sha256(req["mesh"]),
                   "fit_steps": req["fit_steps"], "fit_iou": fit_iou, "edits": [], "shape_kept": True}
        return EditSource(latent, latent, surface, src.normalisation, lineage, fit_iou, [], [])
    with ctx.timed("read"):
        latent, reference, meta = load_latent_with_reference(req["asset"], expected_shape=ae.cfg.latent_shape)
        cuts = load_cuts(req["asset"], meta)
    latent = latent.to(_model_device(ae))
    reference = latent if reference is None else reference.to(latent.device)
    norm = Normalisation(**meta["normalisation"]) if meta.get("normalisation") else None
    lineage = {"source_latent": os.path.abspath(req["asset"]), "source_op": meta.get("op"),
               "prompt": meta.get("prompt"), "source_mesh": meta.get("source_mesh"),
               "source_mesh_sha256": meta.get("source_mesh_sha256"),
               "edits": [*meta.get("edits", []), *([meta["instruction"]] if meta.get("instruction") else [])],
               # whether every edit so far kept the shape (colour edits only): then the reference's
               # shape is the chain's; unknown for edits saved before this was recorded
               "shape_kept": bool(meta.get("shape_kept", meta.get("op") != "edit"))}
    surface, warnings = None, []
    if meta.get("shown_over") == "source_mesh" and norm is not None:
        surface, warnings = _chained_surface(ctx, req, meta, norm)
    return EditSource(latent, reference, surface, norm, lineage, None, warnings, cuts)


@dataclass
class EditSource:
    latent: object
    reference: object
    surface: object          # models.meshio.MeshField or None
    normalisation: object    # models.meshio.Normalisation or None (a Kiln asset in the cube)
    lineage: dict
    fit_iou: float | None
    warnings: list
    cuts: list               # parts the chain removed (models.edit.removal.PartCut), shown cut out


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _chained_surface(ctx: JobContext, req: dict, meta: dict, norm):
    """The user's mesh an edit chain started from, read again in the frame it was fitted in;
    (None, [warning]) when it is gone or changed."""
    from models.edit.composite import mesh_surface
    from models.meshio import MeshInputError, in_frame, load_mesh

    path = meta.get("source_mesh") or ""
    try:
        if os.path.isfile(path) and _sha256(path) == meta.get("source_mesh_sha256"):
            with ctx.timed("surface"):
                src = in_frame(load_mesh(path), norm)
                return mesh_surface(src, req["seed"], check=ctx.check_cancel), []
    except (MeshInputError, OSError, ValueError):
        pass
    name = os.path.basename(path) or "unknown"
    return None, [(f"the mesh this chain of edits started from ({name}) is missing or has changed, "
                   "so the parts this edit leaves alone come from its fitted latent")]


def _model_device(model):
    return next(model.parameters()).device


def run_edit(ctx: JobContext, req: dict) -> dict:
    """Kiln latent or any mesh + instruction -> edited latent -> mesh (in the source's own frame)."""
    from models.edit.composite import CompositeField, composite_mesh, recoloured_mesh
    from models.edit.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS
    from models.edit.recolour import SHAPE_KEEPING_PATHS
    from models.edit.removal import carried_cuts

    with ctx.timed("load_model"):
        ae = ctx.registry.autoencoder()
        editor = ctx.registry.get("edit", req.get("model"))
    source = _edit_source(ctx, req, ae)
    latent, norm, lineage = source.latent, source.normalisation, source.lineage
    ctx.check_cancel()
    steps = req.get("steps") or DEFAULT_STEPS
    guidance = DEFAULT_GUIDANCE if req.get("guidance") is None else float(req["guidance"])
    ctx.progress(0.5, "edit", "encoding the instruction")
    with ctx.timed("edit"):
        edit = editor.edit(latent, req["instruction"], seed=req["seed"], strength=float(req["strength"]), steps=steps,
                           guidance=guidance, progress=ctx.stage(0.5, 0.6, "edit"), cancel=ctx.cancelled)
    edited, warnings, edit_path = edit.latent, edit.warnings, edit.path
    cuts = carried_cuts(source.cuts, edit)
    lineage["shape_kept"] = keep_shape = lineage["shape_kept"] and edit_path in SHAPE_KEEPING_PATHS
    # an edit of a Kiln asset is cleaned like the asset; one of a fitted mesh keeps all its parts
    min_part = _min_part(req, generated=lineage.get("source_mesh") is None)
    with ctx.timed("mesh"):
        # shown over the chain's first latent, or the user's mesh it started from: what no edit
        # changed stays as it was (and after colour edits only, the shape all of it)
        if keep_shape and source.surface is not None and not cuts:  # colour edits of a user's mesh: its own triangles
            shown = CompositeField(ae, source.reference, edited, surface=source.surface, keep_shape=True)
            mesh = recoloured_mesh(shown, source.surface.src)
        else:
            mesh, shown = composite_mesh(ae, source.reference, edited, req["resolution"],
                                         progress=ctx.stage(0.6, 0.95, "mesh"), cancel=ctx.cancelled,
                                         min_part=min_part, surface=source.surface, keep_shape=keep_shape,
                                         cuts=cuts)
    warnings = [*source.warnings, *warnings]
    if norm is not None:
        mesh.vertices = norm.to_original_z_up(mesh.vertices)
    shape_share, colour_share = shown.share_edited()
    meta = {"op": "edit", "model": "kiln-edit", "model_version": editor.model.meta.get("version"),
            "edit_path": edit_path,
            "autoencoder_config": ae.cfg.to_dict(), "instruction": req["instruction"], "strength": req["strength"],
            "seed": req["seed"], "steps": steps, "guidance": guidance, "resolution": req["resolution"],
            "min_part": min_part, "warnings": warnings, **lineage,
            "edited_share": {"shape": round(shape_share, 4), "colour": round(colour_share, 4)},
            "shown_over": "source_mesh" if source.surface is not None else "reference_latent",
            **({"normalisation": norm.to_dict()} if norm is not None else {})}
    result = _write_outputs(ctx, req, mesh, edited, meta, reference=source.reference, cuts=cuts)
    return {**result, "warnings": warnings, "fit_iou": source.fit_iou}


RUNNERS: dict[str, Callable[[JobContext, dict], dict]] = {
    "encode": run_encode, "generate": run_generate, "edit": run_edit,
}


def run_job(ctx: JobContext, req: dict) -> dict:
    t0 = time.perf_counter()
    ctx.prepare_output(req)
    result = RUNNERS[req["op"]](ctx, req)
    ctx.timings["total"] = round(time.perf_counter() - t0, 4)
    return {**result, "timings": dict(ctx.timings)}
