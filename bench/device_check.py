"""The CUDA path against the CPU path, in one process: images -> latent (feed-forward, then a few
refinement steps) -> 128^3 coloured mesh -> a latent fitted back to that mesh, on both devices,
with their timings and how far the results differ. Needs no text encoder, so it runs where only
torch, numpy and scikit-image are installed.

    .venv/bin/python bench/device_check.py [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report  # noqa: E402
from bench.images import photo  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.images.pipeline import ImagesToAsset  # noqa: E402
from models.meshio import RawMesh, normalise  # noqa: E402
from models.triplane.inference import encode_source_mesh, latent_to_mesh  # noqa: E402
from models.triplane.loading import load_autoencoder  # noqa: E402


def run_on(device: torch.device, front: np.ndarray, back: np.ndarray, refine_steps: int) -> dict:
    def synced():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    def stage(name):  # progress as it goes: a run that stops early still says how far it got
        print(f"[{device.type}] {name}", flush=True)

    stage("load")
    t = synced()
    ae = load_autoencoder(device=device)
    rec = ImagesToAsset.load(ae, device=device)
    out = {"load_s": synced() - t}
    stage("feed-forward")
    rec.reconstruct(front, back)  # warm-up
    t = synced()
    latent, _ = rec.reconstruct(front, back)
    out["feed_forward_s"] = synced() - t
    stage("refine")
    t = synced()
    refined, info = rec.reconstruct(front, back, refine_steps=refine_steps)
    out["refine_s"] = synced() - t
    stage("mesh")
    t = synced()
    mesh = latent_to_mesh(ae, latent, 128)
    out["mesh_128_s"] = synced() - t
    src = normalise(RawMesh(mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64), mesh.colors))
    stage("encode + fit")
    t = synced()
    fitted, _ = encode_source_mesh(ae, src, fit_steps=20)
    out["encode_fit20_s"] = synced() - t
    out = {k: round(v, 4) for k, v in out.items()}
    out.update(vertices=len(mesh.vertices), refine=info.get("refine"),
               tensors={"latent": latent.cpu(), "refined": refined.cpu(), "fitted": fitted.cpu()})
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--refine-steps", type=int, default=5)
    args = p.parse_args()
    device = pick_device(args.device)
    front, back = photo("front"), photo("back")
    here = run_on(device, front, back, args.refine_steps)
    out = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "torch": torch.__version__}
    if device.type != "cpu":
        cpu = run_on(torch.device("cpu"), front, back, args.refine_steps)
        for k, v in here.pop("tensors").items():
            ref = cpu["tensors"][k]
            out[f"{k}_max_abs_diff_vs_cpu"] = round(float((v - ref).abs().max()), 6)
            out[f"{k}_scale"] = round(float(ref.abs().mean()), 4)
        cpu.pop("tensors")
        out["cpu"] = cpu
    else:
        here.pop("tensors")
    out[str(device.type)] = here
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
