"""Side by side on one machine, in one run: Kiln's warm text -> mesh (and images -> mesh once the
bundled images model ships) against the architectures a user would otherwise run, at their
published sizes: Shap-E text -> 3D (diffusers: 24-layer 1024-wide prior, CLIP ViT-L/14 text tower,
NeRF/STF renderer) and TripoSR image -> 3D (DINO ViT-B/16 at 512 px, 16-layer 1024-wide triplane
transformer, NeRF MLP). They are randomly initialised from their published configurations: the
amount of computation does not depend on the weights. A few of their weights are then set so the
decoded field is an ellipsoid, so marching cubes and the colour queries work on a realistic surface
(random weights give no surface or a noise surface).

Settings are those their users run: Shap-E 64 sampling steps (Heun: 2 prior evaluations per step
but the last, each batched with its classifier-free-guidance twin), guidance 15; the meshing grid is
the same for all (Kiln's --resolution, 128 by default; TripoSR's own default is 256, --triposr-grid).

    .venv/bin/python bench/compare.py [--quick] [--threads N] [--resolution 128]

--quick samples Shap-E with 2 steps (3 prior evaluations) and extrapolates linearly to 64 steps
(time per prior evaluation x evaluations), which the output says; every other figure is measured.
A full Shap-E run takes about half an hour on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report, timeit  # noqa: E402

PROMPT = "a red chair with a tall back"


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return out, round(time.perf_counter() - t, 3)


def bench_kiln(out: dict, device, resolution: int) -> float:
    from backend.registry import Registry
    from models.text.pipeline import TextToAsset
    from models.triplane.inference import latent_to_mesh
    from models.triplane.loading import load_autoencoder

    ae = load_autoencoder(device=device)
    gen = TextToAsset.load(device=device)
    seeds = iter(range(100))
    warm = timeit(lambda: latent_to_mesh(ae, gen.generate_latent(PROMPT, seed=next(seeds))[0], resolution), repeat=3)
    out["kiln_text_to_mesh_s"] = warm["median_s"]
    out["kiln_text_settings"] = f"8 flow steps, guidance 3.0, {resolution}^3 coarse-to-fine marching cubes, warm"
    images = next(s for s in Registry(str(device)).status() if s["id"] == "kiln-images")
    out["kiln_images_to_mesh_s"] = None
    if not images["available"]:
        out["kiln_images_note"] = f"skipped: kiln-images unavailable ({images['reason']})"
        return warm["median_s"]
    from bench.images import photo
    from models.images.pipeline import ImagesToAsset

    rec = ImagesToAsset.load(ae, device=device)
    front = photo("front")
    out["kiln_images_to_mesh_s"] = timeit(lambda: latent_to_mesh(ae, rec.reconstruct(front)[0], resolution),
                                          repeat=3)["median_s"]
    out["kiln_images_settings"] = f"front image (512 px), feed-forward, {resolution}^3, warm"
    return warm["median_s"]


def bench_shap_e(out: dict, device, resolution: int, quick: bool, full_steps: int = 64) -> float:
    from models.adapters.mc_tables import fill_mesh_decoder_tables
    from models.adapters.shap_e import DEFAULT_GUIDANCE, ShapEAdapter
    from tests.adapter_fixtures import real_size_shap_e, shape_shap_e_renderer

    t = time.perf_counter()
    pipe = real_size_shap_e()
    shape_shap_e_renderer(pipe.shap_e_renderer)
    filled = fill_mesh_decoder_tables(pipe.shap_e_renderer.mesh_decoder)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    out["shap_e_build_s"] = round(time.perf_counter() - t, 2)
    out["shap_e_params_m"] = round(sum(p.numel() for m in (pipe.prior, pipe.text_encoder, pipe.shap_e_renderer)
                                       for p in m.parameters()) / 1e6, 1)
    adapter = ShapEAdapter(pipe, "text", device, "random init", filled)

    def evaluations(steps: int) -> int:
        pipe.scheduler.set_timesteps(steps)
        return len(pipe.scheduler.timesteps)

    guidance = DEFAULT_GUIDANCE["text"]
    _, encode_s = _timed(lambda: pipe._encode_prompt(PROMPT, device, 1, True), device)
    steps = 2 if quick else full_steps
    latent, sample_s = _timed(lambda: adapter.sample_latent(PROMPT, seed=0, steps=steps, guidance=guidance), device)
    n_run, n_full = evaluations(steps), evaluations(full_steps)
    per_eval = (sample_s - encode_s) / n_run
    out["shap_e_prior_evaluation_s"] = round(per_eval, 3)
    out["shap_e_prior_evaluations_64_steps"] = n_full
    if quick:
        out["shap_e_sample_64_steps_s"] = round(encode_s + per_eval * n_full, 1)
        out["shap_e_sample_note"] = (f"EXTRAPOLATED: sampled {steps} steps ({n_run} prior evaluations, {sample_s} s) "
                                     f"and scaled linearly to {full_steps} steps ({n_full} evaluations)")
    else:
        out["shap_e_sample_64_steps_s"] = sample_s
    mesh, decode_s = _timed(lambda: adapter.decode_mesh(latent, grid_size=resolution), device)
    out["shap_e_decode_mesh_s"] = decode_s
    out["shap_e_mesh_vertices"] = len(mesh.vertices)
    out["shap_e_settings"] = f"{full_steps} Heun steps, guidance {guidance}, SDF grid {resolution}^3 (measured)"
    total = out["shap_e_sample_64_steps_s"] + decode_s
    out["shap_e_text_to_mesh_s"] = round(total, 1)
    return total


def bench_triposr(out: dict, device, grid: int) -> float:
    import yaml
    from PIL import Image

    from models.adapters.frames import TRIPOSR_TO_KILN, to_kiln
    from models.triposr.loading import build_model, load_config
    from tests.adapter_fixtures import TRIPOSR_CONFIG, shape_triposr

    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w", encoding="utf-8") as fh:
            yaml.safe_dump(TRIPOSR_CONFIG, fh)
        torch.manual_seed(0)
        model = build_model(load_config(path), tmp)
    shape_triposr(model)
    model = model.to(device).eval()
    out["triposr_build_s"] = round(time.perf_counter() - t, 2)
    out["triposr_params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[96:416, 160:352] = [200, 40, 40, 255]
    image = Image.fromarray(rgba)
    with torch.inference_mode():
        codes, fwd_s = _timed(lambda: model(model.preprocess(image)), device)
        (verts, faces, colors), mesh_s = _timed(lambda: model.extract_mesh(codes[0], grid), device)
    _, kiln_frame_s = _timed(lambda: to_kiln(verts, faces, colors, TRIPOSR_TO_KILN), device)
    out["triposr_image_to_triplane_s"] = fwd_s
    out["triposr_extract_mesh_s"] = mesh_s
    out["triposr_mesh_vertices"] = len(verts)
    full_s = round(fwd_s + mesh_s + kiln_frame_s, 3)
    out["triposr_image_to_mesh_s"] = full_s
    out["triposr_settings"] = f"cond image 512 px, density grid {grid}^3 (all points, as TripoSR), threshold 25"
    return full_s


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: KILN_THREADS or all, at most 8)")
    p.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    p.add_argument("--triposr-grid", type=int, default=None, help="TripoSR's grid (default: --resolution)")
    p.add_argument("--quick", action="store_true", help="Shap-E: 2 sampling steps, extrapolated to 64")
    p.add_argument("--skip-shap-e", action="store_true")
    p.add_argument("--skip-triposr", action="store_true")
    args = p.parse_args()

    from models.device import pick_device

    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = {"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(0),
           "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "quick": args.quick}
    kiln = bench_kiln(out, device, args.resolution)
    if not args.skip_shap_e:
        shap_e = bench_shap_e(out, device, args.resolution, args.quick)
        out["ratio_shap_e_over_kiln_text"] = round(shap_e / kiln)
    if not args.skip_triposr:
        triposr = bench_triposr(out, device, args.triposr_grid or args.resolution)
        if out.get("kiln_images_to_mesh_s"):
            out["ratio_triposr_over_kiln_images"] = round(triposr / out["kiln_images_to_mesh_s"], 1)
        out["ratio_triposr_over_kiln_text"] = round(triposr / kiln, 1)
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
