"""Short constructors for primitives, used by the category builders."""
from __future__ import annotations

import numpy as np

from .primitives import BOX, CAPSULE, CONE, CYLINDER, ELLIPSOID, TORUS, Primitive

GROUND = -0.85  # every asset stands on z = GROUND, centred on the Z axis


def box(centre, half, rounding=0.01, rotation=None, subtract=False) -> Primitive:
    r = min(rounding, 0.5 * min(half))
    return _prim(BOX, centre, (*half, r), rotation, subtract)


def ellipsoid(centre, radii, rotation=None) -> Primitive:
    return _prim(ELLIPSOID, centre, (*radii, 0.0), rotation)


def cylinder(centre, radius, half_height, rotation=None, subtract=False) -> Primitive:
    return _prim(CYLINDER, centre, (radius, half_height), rotation, subtract)


def cone(centre, r_bottom, r_top, half_height, rotation=None) -> Primitive:
    return _prim(CONE, centre, (r_bottom, r_top, half_height), rotation)


def torus(centre, major, minor, rotation=None) -> Primitive:
    return _prim(TORUS, centre, (major, minor), rotation)


def capsule(centre, radius, half_length, rotation=None) -> Primitive:
    return _prim(CAPSULE, centre, (radius, half_length), rotation)


def _prim(kind, centre, params, rotation, subtract=False) -> Primitive:
    rot = np.eye(3, dtype=np.float32) if rotation is None else np.asarray(rotation, np.float32)
    return Primitive(kind, tuple(float(c) for c in centre), tuple(float(p) for p in params), rot, subtract)
