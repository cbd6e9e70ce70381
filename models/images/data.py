"""Training and evaluation images: jittered Front and Back renders of procedural assets,
prepared exactly as a user's image is (`preprocess.prepare_image`). Deterministic for
(split, index); cached as float16 under runs/data/."""
from __future__ import annotations

import os

import numpy as np

from ..parallel import parallel_map
from ..world.asset import Asset, sample_asset_spec
from .preprocess import prepare_image
from .render import VIEWS, random_background, random_camera, random_lighting, sphere_trace

RENDER_RES = 96     # rendered, then cropped to the object and resampled to the model's size


def render_asset(split: str, index: int, variants: int, size: int = 64) -> np.ndarray:
    """(2 views, variants, 4, size, size) float16: each variant a new camera, light and background."""
    asset = Asset(sample_asset_spec(split, index))
    rng = np.random.default_rng([index, 0x494D47, split == "test"])
    out = np.zeros((len(VIEWS), variants, 4, size, size), np.float16)
    for v, view in enumerate(VIEWS):
        for k in range(variants):
            cam = random_camera(rng, view)
            img, _ = sphere_trace(asset.query, cam, RENDER_RES, random_lighting(rng, cam), random_background(rng))
            out[v, k] = prepare_image(img, size)
    return out


def _render_job(args) -> np.ndarray:
    return render_asset(*args)


def load_or_render(split: str, n: int, variants: int, cache_dir: str, workers: int = 2) -> np.ndarray:
    """(n, 2, variants, 4, 64, 64) float16 renders of assets 0..n-1 of a split."""
    path = os.path.join(cache_dir, f"images_{split}_{n}x{variants}.npy")
    if os.path.exists(path):
        return np.load(path)
    jobs = [(split, i, variants) for i in range(n)]
    renders = parallel_map(_render_job, jobs, workers, label=f"{split} renders")
    out = np.stack(renders)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(path + ".tmp.npy", out)
    os.replace(path + ".tmp.npy", path)
    return out
