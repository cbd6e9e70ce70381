"""Published checkpoints as Kiln models: where their weights are looked for, their registry
entries, and the generate runner that turns their meshes into Kiln results.

Weights are never downloaded. Each adapter looks in
  1. $KILN_MODELS_DIR/<folder> (the folder the user sets: `--models-dir` on the command line,
     the add-on's preferences, or the environment variable), then
  2. the Hugging Face cache (standard layout, `HF_HOME` / `HF_HUB_CACHE`), offline.
A result is the adapter's mesh in Kiln's frame and cube plus a Kiln latent fitted to it, so it
can be edited like any Kiln asset.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import JobError

MODELS_DIR_ENV = "KILN_MODELS_DIR"
FIT_STEPS = 60          # Adam steps fitting Kiln's latent to an adapter's mesh (as `encode` does by default)


@dataclass(frozen=True)
class AdapterSpec:
    id: str
    modes: tuple[str, ...]
    description: str
    folder: str             # sub-folder of $KILN_MODELS_DIR
    hub_repo: str           # repository id in the Hugging Face cache
    layout: str             # "diffusers" (model_index.json + component folders) or "triposr"
    device_needs: str


SPECS = (
    AdapterSpec("shap-e", ("text",), "Shap-E text -> 3D (OpenAI) through diffusers' ShapEPipeline",
                "shap-e", "openai/shap-e", "diffusers",
                "CUDA GPU recommended (about 3 GB); on a CPU one asset takes tens of minutes"),
    AdapterSpec("shap-e-img2img", ("images",), "Shap-E image -> 3D (OpenAI) through diffusers' ShapEImg2ImgPipeline",
                "shap-e-img2img", "openai/shap-e-img2img", "diffusers",
                "CUDA GPU recommended (about 3 GB); on a CPU one asset takes tens of minutes"),
    AdapterSpec("triposr", ("images",), "TripoSR-format image -> 3D (feed-forward triplane NeRF), Kiln's code",
                "TripoSR", "stabilityai/TripoSR", "triposr",
                "CUDA GPU recommended (about 6 GB at 256^3); CPU works, about a minute per asset"),
)
ADAPTER_IDS = tuple(s.id for s in SPECS)


def is_adapter(model_id: str | None) -> bool:
    return model_id in ADAPTER_IDS


def models_dir() -> str | None:
    d = os.environ.get(MODELS_DIR_ENV, "").strip()
    return os.path.abspath(os.path.expanduser(d)) if d else None


def _complete(path: str, layout: str) -> bool:
    """Whether a folder holds everything the adapter loads (not only some of it)."""
    if not os.path.isdir(path):
        return False
    if layout == "triposr":
        return os.path.isfile(os.path.join(path, "config.yaml")) and any(
            os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", "model.ckpt"))
    index = os.path.join(path, "model_index.json")
    try:
        with open(index, encoding="utf-8") as fh:
            components = json.load(fh)
    except (OSError, ValueError):
        return False
    return all(os.path.isdir(os.path.join(path, name)) for name, value in components.items()
               if not name.startswith("_") and isinstance(value, list) and value[0] is not None)


def _hf_cached(repo: str) -> str | None:
    """The cached snapshot folder of a hub repository, offline (None when it is not cached)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, no cache, or no huggingface_hub: all "not found"
        return None


def locate(spec: AdapterSpec) -> tuple[str | None, str]:
    """-> (weights folder, "") or (None, why not: every place that was searched)."""
    searched = []
    root = models_dir()
    if root:
        cand = os.path.join(root, spec.folder)
        if _complete(cand, spec.layout):
            return cand, ""
        searched.append(cand + (" (incomplete)" if os.path.isdir(cand) else ""))
    else:
        searched.append(f"${MODELS_DIR_ENV}/{spec.folder} (no models folder set: --models-dir or ${MODELS_DIR_ENV})")
    cached = _hf_cached(spec.hub_repo)
    if cached and _complete(cached, spec.layout):
        return cached, ""
    searched.append(f"the Hugging Face cache ({spec.hub_repo}" + (", incomplete)" if cached else ")"))
    return None, "weights not found in " + " or ".join(searched)


def _loader(spec: AdapterSpec):
    def load(device):
        path, why = locate(spec)
        if path is None:
            raise JobError("model_unavailable", f"{spec.id}: {why}")
        if spec.layout == "triposr":
            from models.adapters.triposr import TripoSRAdapter

            return TripoSRAdapter.load(path, device)
        from models.adapters.shap_e import ShapEAdapter

        return ShapEAdapter.load(path, spec.modes[0], device)

    return load


def adapter_entries() -> list:
    from .registry import ModelEntry

    return [ModelEntry(s.id, s.modes, s.description, (), _loader(s), locate=lambda s=s: locate(s),
                       device_needs=s.device_needs) for s in SPECS]


# ------------------------------------------------------------------ runner


def run_adapter_generate(ctx, req: dict) -> dict:
    """generate with `model` = an adapter id: text or a front image -> the adapter's mesh in Kiln's
    frame and cube, plus a Kiln latent fitted to it (so `edit` works on the result)."""
    from models.metrics import volume_iou
    from models.triplane.inference import LatentField, encode_source_mesh

    from .jobs import _write_outputs

    mode, model_id = req["mode"], req["model"]
    spec = next(s for s in SPECS if s.id == model_id)
    entry = ctx.registry.entry_for(mode, model_id)   # model_unavailable when the model does not do this mode
    status = entry.status()
    if not status["available"]:                       # before reading inputs: the first thing to fix
        raise JobError("model_unavailable", f"{model_id}: {status['reason']}")
    warnings = []
    image = None
    if mode == "images":
        from models.adapters.images import load_image

        image = load_image(req["front"])
        if req.get("back"):
            load_image(req["back"])  # a bad path is still an error, though the model cannot use it
            warnings.append(f"{model_id} reconstructs from the front image only; the back image was not used")
    with ctx.timed("load_model"):
        adapter = ctx.registry.get(mode, model_id)
        ae = ctx.registry.autoencoder()
    ctx.check_cancel()
    params = {"resolution": req["resolution"]}
    with ctx.timed("generate"):
        if spec.layout == "triposr":
            src = adapter.generate(image, resolution=req["resolution"], progress=ctx.stage(0.0, 0.6, "generate"),
                                   cancel=ctx.cancelled)
            params["threshold"] = 25.0
        else:
            from models.adapters.shap_e import DEFAULT_GUIDANCE, DEFAULT_STEPS, prepare_image

            steps = req.get("steps") or DEFAULT_STEPS
            guidance = DEFAULT_GUIDANCE[mode] if req.get("guidance") is None else float(req["guidance"])
            cond = req["prompt"] if mode == "text" else prepare_image(image)
            src = adapter.generate(cond, seed=req["seed"], steps=steps, guidance=guidance,
                                   grid_size=req["resolution"], progress=ctx.stage(0.0, 0.6, "generate"),
                                   cancel=ctx.cancelled)
            params.update(steps=steps, guidance=guidance, seed=req["seed"])
    ctx.check_cancel()
    with ctx.timed("fit"):
        latent, samples = encode_source_mesh(ae, src, fit_steps=FIT_STEPS, seed=req["seed"],
                                             progress=ctx.stage(0.6, 0.95, "fit"), cancel=ctx.cancelled)
    fit_iou = None
    if samples is not None:
        fit_iou = round(float(volume_iou(LatentField(ae, latent).sdf(samples[0]), samples[1])), 4)
    from models.mesh import Mesh

    mesh = Mesh(src.vertices, src.faces, src.colors)
    meta = {"op": "generate", "mode": mode, "model": model_id, "weights": adapter.source,
            "prompt": req.get("prompt") if mode == "text" else None,
            "front": os.path.abspath(req["front"]) if mode == "images" else None,
            **params, "latent": "fitted to the model's mesh" if FIT_STEPS else "encoded from the model's mesh (no fit)",
            "fit_steps": FIT_STEPS, "fit_iou": fit_iou,
            "autoencoder_config": ae.cfg.to_dict(), "warnings": warnings}
    result = _write_outputs(ctx, req, mesh, latent, meta)
    return {**result, "warnings": warnings, "fit_iou": fit_iou}
