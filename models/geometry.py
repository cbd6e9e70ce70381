"""Small geometry helpers shared by data generation, mesh I/O and evaluation."""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage


def grid_points(res: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """(res^3, 3) cell-centre-free grid including both ends, ordered x-major (i, j, k)."""
    axis = np.linspace(lo, hi, res, dtype=np.float32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


def sample_triangles(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator):
    """Area-weighted uniform samples on a triangle mesh: (points (n, 3), face index (n,), barycentrics (n, 3))."""
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area")
    face = rng.choice(len(faces), size=n, p=area / total)
    u, v = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    bary = np.stack([1 - u - v, u, v], axis=1).astype(np.float32)
    pts = np.einsum("nk,nkd->nd", bary, tri[face])
    return pts.astype(np.float32), face, bary


def project_to_surface(points: np.ndarray, sdf_fn: Callable[[np.ndarray], np.ndarray],
                       steps: int = 2, eps: float = 1e-3) -> np.ndarray:
    """Newton steps p <- p - d * grad d / |grad d|^2 with central differences."""
    p = points.astype(np.float32).copy()
    offsets = np.eye(3, dtype=np.float32) * eps
    for _ in range(steps):
        stacked = np.concatenate([p] + [p + o for o in offsets] + [p - o for o in offsets])
        d = sdf_fn(stacked).reshape(7, len(p))
        grad = np.stack([(d[1 + i] - d[4 + i]) / (2 * eps) for i in range(3)], axis=1)
        norm2 = np.maximum(np.sum(grad * grad, axis=1, keepdims=True), 1e-8)
        p = p - d[0][:, None] * grad / norm2
    return p


def inside_parts(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The connected parts of an SDF grid's inside (26-connected voxels with sdf < 0): a label
    per voxel (0 outside, k for part k) and the voxel count of each part (index k - 1)."""
    labels, _ = ndimage.label(grid < 0, structure=np.ones((3, 3, 3), bool))
    return labels, np.bincount(labels.ravel())[1:]
