"""Evaluate images -> 3D on held-out assets.

    python -m models.eval images [--assets 65] [--refine-assets 13] [--refine-steps 10]

Held-out `test` assets (never rendered for training), each rendered from a jittered Front
and Back camera (random focal length or orthographic, light, background) and prepared as a
user's image would be. Measured against the exact asset, placed in the frame the model
predicts in (`images.frame`: on the ground, centred, largest side fixed, as a cropped image
tells it; checkpoints before 1.2 predict the asset as it sits in the cube): occupancy IoU
(uniform points in the cube), F-score of the 64^3 mesh's surface at 0.02 and 0.05, colour L1
at the true surface.
Rows: the autoencoder's own reconstruction of the asset (the ceiling of any image model in
this latent space), front only, front + back, and front + a wrong back (the front mirrored;
another asset's back). Refinement (GTR-style) on the first --refine-assets, from level
orthographic Front and Back renders (the views it assumes): the same figures before and after,
its render figures and its time.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ..data import surface_points
from ..device import pick_device
from ..images.data import RENDER_RES, render_asset
from ..images.frame import from_image_frame, image_frame, to_image_frame
from ..images.pipeline import DEFAULT_REFINE_STEPS, DEFAULT_WEIGHTS, ImagesToAsset
from ..images.render import (
    VIEWS,
    canonical_camera,
    random_background,
    random_lighting,
    sphere_trace,
)
from ..mesh import MeshExtractionError
from ..metrics import volume_iou
from ..triplane.inference import LatentField, encode_cloud, latent_to_mesh
from ..triplane.loading import load_autoencoder
from ..world.asset import Asset, sample_asset_spec
from . import finish
from .autoencoder import reconstruction_metrics, summarise

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = ("autoencoder", "front", "front_back", "front_mirrored_back", "front_other_back")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--assets", type=int, default=65, help="held-out assets (5 per category)")
    p.add_argument("--refine-assets", type=int, default=13)
    p.add_argument("--refine-steps", type=int, default=DEFAULT_REFINE_STEPS)
    p.add_argument("--resolution", type=int, default=64, help="mesh resolution for the F-score")
    p.add_argument("--device", default="auto")
    p.add_argument("--json-out", default=os.path.join(REPO, "models", "cards", "images_eval.json"))


def ground_truth(index: int, frame: str = "image") -> dict:
    """A held-out asset's exact occupancy (uniform points), surface and colour, and the surface
    cloud the autoencoder row encodes, in the frame the model predicts in (`images.frame`)."""
    asset = Asset(sample_asset_spec("test", index))
    rng = np.random.default_rng([index, 0x45564C])
    surf = surface_points(asset, 10000 + 2048, rng)
    rgb = asset.query(surf)[1]
    uni = rng.uniform(-1, 1, (100_000, 3)).astype(np.float32)
    if frame == "image":
        origin, scale = image_frame(surf)
        uni_sdf = asset.query(from_image_frame(uni, origin, scale), with_colour=False)[0] * scale
        surf = to_image_frame(surf, origin, scale)
    else:
        uni_sdf = asset.query(uni, with_colour=False)[0]
    return {"category": asset.spec.category, "uni": uni, "uni_sdf": uni_sdf, "surf": surf[:10000],
            "surf_rgb": rgb[:10000], "cloud": np.concatenate([surf[10000:], rgb[10000:]], 1)}


def canonical_render(index: int, view: str) -> np.ndarray:
    """A level orthographic view of a held-out asset on a random plain background."""
    asset = Asset(sample_asset_spec("test", index))
    rng = np.random.default_rng([index, VIEWS.index(view), 0x4F5254])
    cam = canonical_camera(view)
    return sphere_trace(asset.query, cam, RENDER_RES, random_lighting(rng, cam), random_background(rng))[0]


def metrics(ae, latent: torch.Tensor, gt: dict, resolution: int) -> dict:
    field = LatentField(ae, latent)
    try:
        mesh = latent_to_mesh(ae, latent, resolution)
    except MeshExtractionError:  # nothing (or everything) decoded: no surface to compare
        return {"iou": volume_iou(field.sdf(gt["uni"]), gt["uni_sdf"]), "f_0.02": 0.0, "f_0.05": 0.0,
                "colour_l1": float(np.abs(field.rgb(gt["surf"]) - gt["surf_rgb"]).mean())}
    m = reconstruction_metrics(field, mesh, gt["uni"], gt["uni_sdf"], gt["surf"], gt["surf_rgb"])
    return {k: m[k] for k in ("iou", "f_0.02", "f_0.05", "colour_l1")}


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    torch.manual_seed(0)
    ae = load_autoencoder(device=device)
    rec = ImagesToAsset.load(ae, args.weights, device)
    t0 = time.time()
    views = [torch.from_numpy(render_asset("test", i, 1)[:, 0].astype(np.float32)).to(device)
             for i in range(args.assets + 1)]                     # (2, 4, S, S) per asset
    rows: dict[str, list[dict]] = {k: [] for k in ROWS}
    per_cat: dict[str, list[float]] = {}
    refine_rows: dict[str, list[dict]] = {"before": [], "after": []}
    render_figures, refine_seconds, ff_seconds = [], [], []
    for i in range(args.assets):
        gt = ground_truth(i, rec.frame)
        front, back = views[i][0:1], views[i][1:2]
        t = time.perf_counter()
        dual = rec.feed_forward(front, back)
        ff_seconds.append(time.perf_counter() - t)
        latents = {"autoencoder": encode_cloud(ae, gt["cloud"]), "front": rec.feed_forward(front),
                   "front_back": dual, "front_mirrored_back": rec.feed_forward(front, torch.flip(front, [-1])),
                   "front_other_back": rec.feed_forward(front, views[i + 1][1:2])}
        for name, z in latents.items():
            rows[name].append(metrics(ae, z, gt, args.resolution))
        per_cat.setdefault(gt["category"], []).append(rows["front_back"][-1]["iou"])
        if i < args.refine_assets:
            # refinement assumes level orthographic views (Blender's Front/Back): give it those
            ortho = rec.prepare_views(canonical_render(i, "front"), canonical_render(i, "back"))
            start = rec.feed_forward(ortho["front"], ortho["back"])
            t = time.perf_counter()
            refined, figures = rec.refine(start, ortho, args.refine_steps)
            refine_seconds.append(time.perf_counter() - t)
            refine_rows["before"].append(metrics(ae, start, gt, args.resolution))
            refine_rows["after"].append(metrics(ae, refined, gt, args.resolution))
            render_figures.append(figures)
        print(f"[{i + 1}/{args.assets}] {gt['category']:9s} IoU front {rows['front'][-1]['iou']:.3f}  "
              f"front+back {rows['front_back'][-1]['iou']:.3f}  autoencoder {rows['autoencoder'][-1]['iou']:.3f}",
              flush=True)

    summary = {"model": "images", "weights": os.path.relpath(args.weights, REPO), "frame": rec.frame,
               "held_out_assets": args.assets,
               "resolution": args.resolution,
               "rows": {k: {m: round(v, 4) for m, v in summarise(r).items()} for k, r in rows.items()},
               "iou_front_back_per_category": {c: round(float(np.mean(v)), 3) for c, v in sorted(per_cat.items())},
               "feed_forward_seconds_median": round(float(np.median(ff_seconds)), 4)}
    if refine_rows["before"]:
        summary["refinement"] = {
            "assets": len(refine_rows["before"]), "steps": args.refine_steps,
            "before": {m: round(v, 4) for m, v in summarise(refine_rows["before"]).items()},
            "after": {m: round(v, 4) for m, v in summarise(refine_rows["after"]).items()},
            "render_before": {k: round(float(np.mean([f["before"][k] for f in render_figures])), 4)
                              for k in render_figures[0]["before"]},
            "render_after": {k: round(float(np.mean([f["after"][k] for f in render_figures])), 4)
                             for k in render_figures[0]["after"]},
            "seconds_median": round(float(np.median(refine_seconds)), 3)}
    print(f"{'row':22s} {'IoU':>6s} {'F@.02':>6s} {'F@.05':>6s} {'colour L1':>9s}")
    for k, s in summary["rows"].items():
        print(f"{k:22s} {s['iou']:6.3f} {s['f_0.02']:6.3f} {s['f_0.05']:6.3f} {s['colour_l1']:9.3f}")
    return finish(summary, t0, args.json_out)
