"""Training data for the triplane autoencoder, generated from the procedural world.

Per asset: coloured surface points (the encoder's input, as a mesh would give),
near-surface and uniform query points with exact signed distance and colour.
Deterministic for (split, index).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
from skimage.measure import marching_cubes

from .geometry import grid_points, project_to_surface, sample_triangles
from .parallel import parallel_map
from .world.asset import Asset, AssetSpec, sample_asset_spec


@dataclass(frozen=True)
class SampleConfig:
    n_surface: int = 4096
    n_near: int = 8192
    n_uniform: int = 4096
    mc_res: int = 64
    near_sigmas: tuple = (0.01, 0.05)


class NoSurfaceError(ValueError):
    pass


def surface_points(asset: Asset, n: int, rng: np.random.Generator, mc_res: int = 64) -> np.ndarray:
    """Uniform points on the exact surface: marching cubes on the SDF, area sampling, Newton projection."""
    def sdf_fn(p):
        return asset.query(p, with_colour=False)[0]

    return grid_surface_points(sdf_fn(grid_points(mc_res)).reshape((mc_res,) * 3), sdf_fn, n, rng)


def grid_surface_points(grid: np.ndarray, sdf_fn, n: int, rng: np.random.Generator) -> np.ndarray:
    """The same from a signed distance grid (R, R, R) over the cube (x, y, z order; any field's,
    e.g. a decoded latent's from `mesh.sdf_grid`) and the function it samples, for the projection."""
    if grid.min() >= 0 or grid.max() <= 0:
        raise NoSurfaceError("no surface inside the cube")
    step = 2.0 / (grid.shape[0] - 1)
    verts, faces, _, _ = marching_cubes(grid, 0.0, spacing=(step, step, step))
    pts, _, _ = sample_triangles(verts.astype(np.float32) - 1.0, faces, n, rng)
    return project_to_surface(pts, sdf_fn)


def coloured_cloud(asset: Asset, points: np.ndarray) -> np.ndarray:
    """(N, 6) float32: the points and the asset's colour at each."""
    return np.concatenate([points, asset.query(points)[1]], axis=1).astype(np.float32)


def asset_record(spec: AssetSpec, seed: int, cfg: SampleConfig = SampleConfig()) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    asset = Asset(spec)
    surf = surface_points(asset, cfg.n_surface + cfg.n_near, rng, cfg.mc_res)
    surf_in, surf_q = surf[: cfg.n_surface], surf[cfg.n_surface:]
    _, surf_rgb = asset.query(surf_in)
    sig = np.repeat(np.asarray(cfg.near_sigmas, np.float32), cfg.n_near // len(cfg.near_sigmas))
    near = surf_q + rng.normal(size=surf_q.shape).astype(np.float32) * sig[:, None]
    uni = rng.uniform(-1, 1, size=(cfg.n_uniform, 3)).astype(np.float32)
    query = np.concatenate([near, uni])
    sdf, rgb = asset.query(query)
    return {
        "surface": np.concatenate([surf_in, surf_rgb], axis=1).astype(np.float16),
        "query": query.astype(np.float16),
        "sdf": sdf.astype(np.float16),
        "rgb": rgb.astype(np.float16),
    }


def _record_for_index(args) -> dict[str, np.ndarray]:
    split, index = args
    return asset_record(sample_asset_spec(split, index), seed=index * 2 + (split == "test"))


def build_dataset(split: str, n: int, workers: int | None = None) -> dict[str, np.ndarray]:
    """Stack records of assets 0..n-1 of a split (parallel over processes)."""
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    jobs = [(split, i) for i in range(n)]
    records = parallel_map(_record_for_index, jobs, workers, label=f"{split} records")
    return {k: np.stack([r[k] for r in records]) for k in records[0]}


def load_or_build(split: str, n: int, cache_dir: str, workers: int | None = None) -> dict[str, np.ndarray]:
    """Records of assets 0..n-1, cached; a cache of more assets of the split is sliced (each
    asset's record depends only on its index)."""
    path = os.path.join(cache_dir, f"ae_{split}_{n}.npz")
    larger = sorted((int(m.group(1)), m.group(0)) for m in (
        re.fullmatch(rf"ae_{split}_(\d+)\.npz", f) for f in (os.listdir(cache_dir) if os.path.isdir(cache_dir) else ()))
        if m and int(m.group(1)) >= n)
    if larger:
        with np.load(os.path.join(cache_dir, larger[0][1])) as z:
            return {k: z[k][:n] for k in z.files}
    data = build_dataset(split, n, workers)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path + ".tmp.npz", **data)
    os.replace(path + ".tmp.npz", path)
    return data
