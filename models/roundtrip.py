"""Encode an asset into Kiln's triplane latent, decode it, write GLB + preview.

    python -m models.roundtrip --out out/roundtrip [--category chair] [--index 0] [--mesh FILE]

Without --mesh a held-out procedural asset is used; with --mesh any OBJ/PLY/STL/GLB.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from .data import surface_points
from .device import pick_device
from .mesh import write_glb
from .meshio import MeshInputError, colored_cloud, load_mesh, normalise
from .preview import render_preview, save_png
from .triplane.inference import encode_cloud, encode_source_mesh, latent_to_mesh
from .triplane.loading import load_autoencoder
from .world.asset import Asset, sample_spec, asset_rng
from .world.categories import CATEGORY_NAMES


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.roundtrip", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--category", choices=CATEGORY_NAMES, default="chair")
    p.add_argument("--index", type=int, default=0, help="which held-out asset of the category")
    p.add_argument("--mesh", help="encode this mesh file instead of a procedural asset")
    p.add_argument("--fit-steps", type=int, default=0, help="latent fitting steps after encoding")
    p.add_argument("--resolution", type=int, default=128, choices=(64, 128, 256))
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    model = load_autoencoder(device=pick_device(args.device))
    timings["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if args.mesh:
        try:
            src = normalise(load_mesh(args.mesh))
        except MeshInputError as exc:
            print(f"error [{exc.code}]: {exc}", file=sys.stderr)
            return 2
        latent, _ = encode_source_mesh(model, src, fit_steps=args.fit_steps)
    else:
        spec = sample_spec(args.category, asset_rng("test", 5000 + args.index), "test")
        asset = Asset(spec)
        pts = surface_points(asset, 2048, np.random.default_rng(args.index))
        latent = encode_cloud(model, np.concatenate([pts, asset.query(pts)[1]], 1))
    timings["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    mesh = latent_to_mesh(model, latent, args.resolution)
    timings["decode_mesh_s"] = time.perf_counter() - t
    glb = os.path.join(args.out, "asset.glb")
    write_glb(mesh, glb)
    png = os.path.join(args.out, "preview.png")
    save_png(render_preview(mesh), png)
    print(json.dumps({"glb": glb, "preview": png, "mesh": mesh.stats,
                      "timings": {k: round(v, 3) for k, v in timings.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
