"""Autoencoder latency on this machine: encode, decode, mesh extraction at 64/128/256, peak memory.

    .venv/bin/python bench/autoencoder.py [--device auto]

The coarse-to-fine extraction is compared with dense evaluation of every grid point
in the same process (the reference), printed as a speed-up ratio.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report, timeit  # noqa: E402
from models.data import surface_points  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.geometry import grid_points  # noqa: E402
from models.mesh import extract_mesh, sdf_grid  # noqa: E402
from models.triplane.inference import LatentField, encode_cloud  # noqa: E402
from models.triplane.loading import load_autoencoder  # noqa: E402
from models.world.asset import Asset, sample_asset_spec  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    device = pick_device(args.device)
    model = load_autoencoder(device=device)
    asset = Asset(sample_asset_spec("test", 1000))
    pts = surface_points(asset, 2048, np.random.default_rng(0))
    cloud = np.concatenate([pts, asset.query(pts)[1]], 1)
    latent = encode_cloud(model, cloud)
    field = LatentField(model, latent)
    out = {"device": str(device), "threads": torch.get_num_threads()}
    out["encode"] = timeit(lambda: encode_cloud(model, cloud), args.repeat)
    out["decode_triplane"] = timeit(lambda: LatentField(model, latent), args.repeat)
    for res in (64, 128, 256):
        out[f"mesh_{res}"] = timeit(lambda: extract_mesh(field.sdf, field.rgb, res), max(2, args.repeat // (res // 64)))
        out[f"decode_plus_mesh_{res}"] = timeit(
            lambda: extract_mesh(LatentField(model, latent).sdf, field.rgb, res), max(2, args.repeat // (res // 64)))
        if res <= 128:
            dense = timeit(lambda: field.sdf(grid_points(res)), 2)
            fast = timeit(lambda: sdf_grid(field.sdf, res), 2)
            out[f"grid_{res}_dense_vs_coarse_to_fine"] = round(dense["median_s"] / fast["median_s"], 2)
    mesh = extract_mesh(field.sdf, field.rgb, 128)
    out["faces_128"] = int(len(mesh.faces))
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
