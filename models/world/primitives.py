"""Batched signed-distance primitives.

Every primitive is (kind, centre, rotation, params). Points are moved into the
primitive's local frame and each kind's closed-form SDF is evaluated for all
primitives of that kind at once, so an asset of ~20 primitives costs a handful
of (N, M) array operations.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX, ELLIPSOID, CYLINDER, CONE, TORUS, CAPSULE = range(6)
KIND_NAMES = ("box", "ellipsoid", "cylinder", "cone", "torus", "capsule")


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float32)


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float32)


@dataclass
class Primitive:
    """One solid. params by kind:
    box (hx, hy, hz, rounding) | ellipsoid (rx, ry, rz, -) | cylinder (r, hz, -, -)
    cone (r_bottom, r_top, hz, -) | torus (R, r, -, -) in local XY | capsule (r, hz, -, -)
    """

    kind: int
    centre: tuple
    params: tuple
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.float32))
    subtract: bool = False

    def bound_radius(self) -> float:
        """Radius of a sphere around `centre` that contains the primitive."""
        p = self.params
        if self.kind == BOX:
            return float(np.linalg.norm(p[:3]))
        if self.kind == ELLIPSOID:
            return float(max(p[:3]))
        if self.kind == CYLINDER or self.kind == CAPSULE:
            return float(np.hypot(p[0], p[1]) + (p[0] if self.kind == CAPSULE else 0))
        if self.kind == CONE:
            return float(np.hypot(max(p[0], p[1]), p[2]))
        if self.kind == TORUS:
            return float(p[0] + p[1])
        raise ValueError(self.kind)


def _length(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.sum(v * v, axis=axis))


def _sd_box(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    # q (M, N, 3); prm (M, 1, 4): half sizes, rounding
    r = prm[..., 3]
    d = np.abs(q) - (prm[..., :3] - r[..., None])
    outside = _length(np.maximum(d, 0.0))
    inside = np.minimum(np.max(d, axis=-1), 0.0)
    return outside + inside - r


def _sd_ellipsoid(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    # Outside: Inigo Quilez's approximation (exact for spheres). Inside it overestimates
    # depth, so use the bound (k0 - 1) * min radius there; both are 0 on the surface.
    radii = prm[..., :3]
    k0 = _length(q / radii)
    k1 = _length(q / (radii * radii))
    outside = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    return np.where(k0 < 1.0, (k0 - 1.0) * radii.min(axis=-1), outside)


def _sd_cylinder(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    d = np.stack([_length(q[..., :2]) - prm[..., 0], np.abs(q[..., 2]) - prm[..., 1]], axis=-1)
    return np.minimum(np.max(d, axis=-1), 0.0) + _length(np.maximum(d, 0.0))


def _sd_cone(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    # Capped cone (frustum) along z, exact (IQ's sdCappedCone).
    r1, r2, h = prm[..., 0], prm[..., 1], prm[..., 2]
    qx = _length(q[..., :2])
    qy = q[..., 2]
    k1x, k1y = r2, h
    k2x, k2y = r2 - r1, 2.0 * h
    cax = qx - np.minimum(qx, np.where(qy < 0.0, r1, r2))
    cay = np.abs(qy) - h
    k2dot = k2x * k2x + k2y * k2y
    t = np.clip(((k1x - qx) * k2x + (k1y - qy) * k2y) / k2dot, 0.0, 1.0)
    cbx = qx - k1x + k2x * t
    cby = qy - k1y + k2y * t
    s = np.where((cbx < 0.0) & (cay < 0.0), -1.0, 1.0)
    return s * np.sqrt(np.minimum(cax * cax + cay * cay, cbx * cbx + cby * cby))


def _sd_torus(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    ring = _length(q[..., :2]) - prm[..., 0]
    return np.sqrt(ring * ring + q[..., 2] ** 2) - prm[..., 1]


def _sd_capsule(q: np.ndarray, prm: np.ndarray) -> np.ndarray:
    z = q[..., 2] - np.clip(q[..., 2], -prm[..., 1], prm[..., 1])
    return np.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2 + z * z) - prm[..., 0]


_SDF = {BOX: _sd_box, ELLIPSOID: _sd_ellipsoid, CYLINDER: _sd_cylinder,
        CONE: _sd_cone, TORUS: _sd_torus, CAPSULE: _sd_capsule}


@dataclass
class PrimitiveTable:
    """Primitives packed as arrays, grouped by kind, for batched evaluation."""

    kinds: np.ndarray      # (M,)
    centres: np.ndarray    # (M, 3)
    rotations: np.ndarray  # (M, 3, 3) local -> world
    params: np.ndarray     # (M, 4)

    @classmethod
    def pack(cls, prims: list[Primitive]) -> "PrimitiveTable":
        if not prims:
            z = np.zeros
            return cls(z(0, np.int64), z((0, 3), np.float32), z((0, 3, 3), np.float32), z((0, 4), np.float32))
        return cls(
            np.array([p.kind for p in prims], dtype=np.int64),
            np.array([p.centre for p in prims], dtype=np.float32),
            np.stack([p.rotation for p in prims]).astype(np.float32),
            np.array([tuple(p.params) + (0.0,) * (4 - len(p.params)) for p in prims], dtype=np.float32),
        )

    def distances(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points -> (N, M) signed distance to every primitive."""
        points = np.asarray(points, dtype=np.float32)
        out = np.empty((len(self.kinds), points.shape[0]), dtype=np.float32)
        for kind in np.unique(self.kinds):
            idx = np.nonzero(self.kinds == kind)[0]
            # world -> local: R^T (p - c), i.e. (p - c) @ R for row vectors; batched over primitives
            q = (points[None] - self.centres[idx][:, None]) @ self.rotations[idx]
            out[idx] = _SDF[int(kind)](q, self.params[idx][:, None, :])
        return out.T
