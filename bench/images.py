"""Warm images -> coloured mesh at 128^3: front only, front + back, with refinement; the split
into image preparation, the transformer, the outline check, decode + marching cubes; cold load;
peak memory.
A warm text -> mesh job runs in the same process as the reference.

    .venv/bin/python bench/images.py [--device auto] [--refine-steps 10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report, timeit  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.images.pipeline import DEFAULT_REFINE_STEPS, ImagesToAsset  # noqa: E402
from models.images.render import canonical_camera, random_lighting, sphere_trace  # noqa: E402
from models.text.pipeline import TextToAsset  # noqa: E402
from models.triplane.inference import latent_to_mesh  # noqa: E402
from models.triplane.loading import load_autoencoder  # noqa: E402
from models.world.asset import Asset, sample_asset_spec  # noqa: E402


def photo(view: str, res: int = 512) -> np.ndarray:
    """A 512 px render of a held-out chair on white, like an artist's orthographic view."""
    asset = Asset(sample_asset_spec("test", 0))
    cam = canonical_camera(view)
    return sphere_trace(asset.query, cam, res, random_lighting(np.random.default_rng(0), cam), np.ones(3))[0]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    p.add_argument("--refine-steps", type=int, default=DEFAULT_REFINE_STEPS)
    args = p.parse_args()
    device = pick_device(args.device)
    t = time.perf_counter()
    ae = load_autoencoder(device=device)
    rec = ImagesToAsset.load(ae, device=device)
    out = {"device": str(device), "threads": torch.get_num_threads(), "cold_load_s": round(time.perf_counter() - t, 3)}
    front, back = photo("front"), photo("back")
    out["prepare_512px_image"] = timeit(lambda: rec.prepare(front))
    f, b = rec.prepare(front), rec.prepare(back)
    out["transformer_front"] = timeit(lambda: rec.feed_forward(f))
    out["transformer_front_back"] = timeit(lambda: rec.feed_forward(f, b))
    latent = rec.feed_forward(f, b)
    out["outline_check_front_back"] = timeit(lambda: rec.outline_agreement(latent, {"front": f, "back": b}))
    out["decode_and_marching_cubes_128"] = timeit(lambda: latent_to_mesh(ae, latent, 128))
    out["end_to_end_front_128"] = timeit(lambda: latent_to_mesh(ae, rec.reconstruct(front)[0], 128))
    out["end_to_end_front_back_128"] = timeit(lambda: latent_to_mesh(ae, rec.reconstruct(front, back)[0], 128))
    out["end_to_end_refined_128"] = timeit(
        lambda: latent_to_mesh(ae, rec.reconstruct(front, back, refine_steps=args.refine_steps)[0], 128), 3)
    out["refine_steps"] = args.refine_steps
    gen = TextToAsset.load(device=device)
    out["reference_text_to_mesh_128"] = timeit(lambda: latent_to_mesh(ae, gen.generate_latent("a red chair")[0], 128))
    ref = out["reference_text_to_mesh_128"]["median_s"]
    for k in ("end_to_end_front_128", "end_to_end_front_back_128", "end_to_end_refined_128"):
        out[f"{k}_vs_text"] = round(out[k]["median_s"] / ref, 2)
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
