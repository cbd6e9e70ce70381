"""Evaluate the triplane autoencoder on held-out shapes.

    python -m models.eval autoencoder [--assets 52] [--fit-steps 60]

Held-out procedural assets (the test seed stream, disjoint from training and from
the training-time validation assets) and non-procedural meshes (trimesh primitives
and a Blender-made mesh) are encoded from 2048 coloured surface points, decoded and
meshed at 128^3. Reports volume IoU (200k uniform points), Chamfer-L1, F-score at
0.02 / 0.05 (asset units; the cube is [-1, 1]^3) and colour error, encode-only and
encode+fit. The last line is JSON.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from ..data import surface_points
from ..device import pick_device
from ..geometry import sample_triangles
from ..mesh import extract_mesh
from ..meshio import colored_cloud, from_trimesh, load_mesh, normalise, sdf_samples
from ..metrics import chamfer, fscore, surface_distances, volume_iou
from ..triplane.inference import LatentField, encode_cloud, fit_latent, fit_planes
from ..triplane.loading import DEFAULT_WEIGHTS, load_autoencoder
from ..world.asset import Asset, sample_asset_spec
from ..world.palette import nearest_colour
from . import finish

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EVAL_OFFSET = 1000  # test-split indices used here; training validation uses 0..63


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--assets", type=int, default=52, help="held-out procedural assets (4 per category)")
    p.add_argument("--fit-steps", type=int, default=60)
    p.add_argument("--planes-fit-steps", type=int, default=0,
                   help="also fit the full 64² planes themselves (from the fitted latent's) this many steps: "
                        "what the frozen field MLP can show past the latent (the card's run: 200)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-external", action="store_true", help="skip the non-procedural meshes")
    p.add_argument("--json-out", default=None, help="also write the summary JSON here")


def reconstruction_metrics(field: LatentField, mesh, uni_pts, uni_sdf, surf_pts, surf_rgb) -> dict:
    pred_uni = field.sdf(uni_pts)
    pts, _, _ = sample_triangles(mesh.vertices, mesh.faces, len(surf_pts), np.random.default_rng(0))
    d_pred, d_gt = surface_distances(pts, surf_pts)
    rgb = field.rgb(surf_pts)
    same = [nearest_colour(a) == nearest_colour(b) for a, b in zip(rgb[::10], surf_rgb[::10])]
    return {"iou": volume_iou(pred_uni, uni_sdf), "chamfer": chamfer(d_pred, d_gt),
            "f_0.02": fscore(d_pred, d_gt, 0.02), "f_0.05": fscore(d_pred, d_gt, 0.05),
            "colour_l1": float(np.abs(rgb - surf_rgb).mean()), "colour_acc": float(np.mean(same))}


def evaluate_case(model, cloud, uni_pts, uni_sdf, surf_pts, surf_rgb, fit_samples, fit_steps, resolution,
                  planes_fit_steps: int = 0) -> dict:
    out = {}
    t = time.perf_counter()
    latent = encode_cloud(model, cloud)
    fields = {"encode": LatentField(model, latent)}
    if fit_steps > 0:
        latent = fit_latent(model, latent, *fit_samples, steps=fit_steps)
        fields["fit"] = LatentField(model, latent)
    out["fit_seconds"] = time.perf_counter() - t
    if planes_fit_steps > 0:   # the field MLP's own ceiling: full planes fitted past the latent
        start = fields["fit" if fit_steps > 0 else "encode"].planes
        fields["planes"] = LatentField(model, planes=fit_planes(model, start, *fit_samples, steps=planes_fit_steps))
    for name, field in fields.items():
        mesh = extract_mesh(field.sdf, field.rgb, resolution)
        for k, v in reconstruction_metrics(field, mesh, uni_pts, uni_sdf, surf_pts, surf_rgb).items():
            out[f"{name}_{k}"] = v
    return out


def procedural_cases(n: int):
    for i in range(EVAL_OFFSET, EVAL_OFFSET + n):
        spec = sample_asset_spec("test", i)
        asset = Asset(spec)
        rng = np.random.default_rng(i)
        surf = surface_points(asset, 20000 + 2048, rng)
        surf_pts, cloud_pts = surf[:20000], surf[20000:]
        _, surf_rgb = asset.query(surf_pts)
        cloud = np.concatenate([cloud_pts, asset.query(cloud_pts)[1]], 1)
        uni = rng.uniform(-1, 1, (200_000, 3)).astype(np.float32)
        near = surf[rng.integers(0, 20000, 16384)] + rng.normal(size=(16384, 3)).astype(np.float32) * 0.02
        fit_pts = np.concatenate([near, rng.uniform(-1, 1, (8192, 3)).astype(np.float32)])
        fit_sdf, fit_rgb = asset.query(fit_pts)
        yield spec.category, (cloud, uni, asset.query(uni, with_colour=False)[0], surf_pts, surf_rgb,
                              (fit_pts, fit_sdf, fit_rgb))


def external_meshes() -> dict:
    """Non-procedural meshes: trimesh primitives and Suzanne exported from Blender."""
    import trimesh

    meshes = {name: from_trimesh(m) for name, m in {
        "trimesh_box": trimesh.creation.box((1.0, 0.6, 0.4)),
        "trimesh_icosphere": trimesh.creation.icosphere(subdivisions=3, radius=0.5),
        "trimesh_capsule": trimesh.creation.capsule(height=1.0, radius=0.25),
        "trimesh_torus": trimesh.creation.torus(major_radius=0.5, minor_radius=0.15),
        "trimesh_cone": trimesh.creation.cone(radius=0.4, height=1.0),
    }.items()}
    suzanne = os.path.join(REPO, "tests", "data", "suzanne_blender.obj")
    if os.path.exists(suzanne):
        meshes["blender_suzanne"] = load_mesh(suzanne)
    return meshes


def external_cases():
    for name, mesh in external_meshes().items():
        rng = np.random.default_rng(7)
        src = normalise(mesh)
        cloud = colored_cloud(src, 2048, rng)
        surf_pts, _, _ = sample_triangles(src.vertices, src.faces, 20000, rng)
        surf_rgb = np.full((len(surf_pts), 3), 0.5, np.float32)  # uncoloured meshes: grey
        uni_pts, uni_sdf, _ = sdf_samples(src, 0, 200_000, rng)
        fit = sdf_samples(src, 16384, 8192, rng)
        yield name, (cloud, uni_pts, uni_sdf, surf_pts, surf_rgb, fit)


def summarise(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    model = load_autoencoder(args.weights, device)
    t0 = time.time()
    per_cat: dict[str, list[dict]] = {}
    rows = []
    for cat, case in procedural_cases(args.assets):
        r = evaluate_case(model, *case, args.fit_steps, args.resolution, args.planes_fit_steps)
        rows.append(r)
        per_cat.setdefault(cat, []).append(r)
    print(f"{'category':10s} {'IoU enc':>8s} {'IoU fit':>8s} {'IoU planes':>10s} {'F@.02 enc':>9s} {'F@.02 fit':>9s} "
          f"{'colour acc':>10s}")
    for cat, rs in per_cat.items():
        s = summarise(rs)
        print(f"{cat:10s} {s['encode_iou']:8.3f} {s.get('fit_iou', float('nan')):8.3f} "
              f"{s.get('planes_iou', float('nan')):10.3f} {s['encode_f_0.02']:9.3f} "
              f"{s.get('fit_f_0.02', float('nan')):9.3f} {s['encode_colour_acc']:10.3f}")
    summary = {"model": "autoencoder", "weights": os.path.relpath(args.weights, REPO), "held_out_assets": len(rows),
               "resolution": args.resolution, "fit_steps": args.fit_steps, "planes_fit_steps": args.planes_fit_steps,
               "procedural": {k: round(v, 4) for k, v in summarise(rows).items()}}
    if not args.no_external:
        ext = {}
        for name, case in external_cases():
            r = evaluate_case(model, *case, args.fit_steps, args.resolution)
            ext[name] = {k: round(v, 4) for k, v in r.items() if "colour" not in k}
            print(f"{name:18s} IoU encode {r['encode_iou']:.3f}  fit {r.get('fit_iou', float('nan')):.3f}  "
                  f"F@.05 encode {r['encode_f_0.05']:.3f}  fit {r.get('fit_f_0.05', float('nan')):.3f}")
        summary["external"] = ext
    return finish(summary, t0, args.json_out)
