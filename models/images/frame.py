"""The frame an image reconstruction is made in: only what a photo can tell about size and place.

A prepared image is cropped to the object and scaled to fill the frame (`preprocess`), so it
does not say how large the asset is or where it stands in the cube: a tall tree and a short one
of the same proportions give the same input. Trained against the asset as it sits in the cube,
the reconstructor has to guess that size, and the mean of its guesses blurs every boundary
(thin legs first). So the images model's targets, its evaluation and its output use the *image
frame*: the asset standing on the ground (z = GROUND), its x and y bounds centred on the Z axis,
its largest dimension TARGET_EXTENT (the procedural world's typical size, which the autoencoder
knows best). A user's reconstruction comes out that size; Blender scales it like any import.
"""
from __future__ import annotations

import numpy as np

from ..world.asset import TARGET_EXTENT
from ..world.shapes import GROUND

_GROUND_POINT = np.array([0.0, 0.0, GROUND], np.float32)


def image_frame(surface: np.ndarray, extent: float = TARGET_EXTENT) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (..., N, 3) of assets -> (origin (..., 3), scale (...)): the bottom centre of
    each asset's bounds, and the factor that makes its largest dimension `extent`."""
    pts = np.asarray(surface, np.float32)
    lo, hi = pts.min(-2), pts.max(-2)
    origin = np.concatenate([(lo[..., :2] + hi[..., :2]) / 2, lo[..., 2:]], -1)
    scale = extent / np.maximum((hi - lo).max(-1), 1e-6)
    return origin.astype(np.float32), scale.astype(np.float32)


def to_image_frame(points: np.ndarray, origin: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Points (..., N, 3) of the asset frame -> the image frame (origin (..., 3), scale (...))."""
    return ((points - origin[..., None, :]) * scale[..., None, None] + _GROUND_POINT).astype(np.float32)


def from_image_frame(points: np.ndarray, origin: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The inverse of `to_image_frame`."""
    return ((points - _GROUND_POINT) / scale[..., None, None] + origin[..., None, :]).astype(np.float32)


def records_in_image_frame(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Autoencoder training records (`models.data`: surface (B, N, 6), query (B, M, 3), sdf (B, M),
    rgb) moved into each asset's image frame: points moved, distances scaled, colours kept.
    Float16 like the records, so the 4000-asset set stays ~0.3 GB."""
    xyz = data["surface"][..., :3].astype(np.float32)
    origin, scale = image_frame(xyz)
    surface = data["surface"].copy()
    surface[..., :3] = to_image_frame(xyz, origin, scale)
    return {**data, "surface": surface,
            "query": to_image_frame(data["query"].astype(np.float32), origin, scale).astype(np.float16),
            "sdf": (data["sdf"].astype(np.float32) * scale[:, None]).astype(np.float16)}
