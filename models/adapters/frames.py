"""Published models' coordinate frames -> Kiln's frame, and their meshes -> Kiln meshes.

Kiln: +Z up, the front faces -Y (Blender's Front view looks from -Y toward +Y, +X to the right).

- Shap-E (openai/shap-e, diffusers): +Z up; the asset's front faces +Y (its pan cameras orbit +Z;
  the official Shap-E demo turns its meshes by 180 degrees about the up axis to face a glTF viewer).
  Kiln = rotate 180 degrees about Z: (x, y, z) -> (-x, -y, z).
- TripoSR: +Z up, the input camera sits on +X looking at the origin with +Y to the image's right
  (tsr/utils.py get_spherical_cameras: "x back, y right, z up"), so the depicted front faces +X.
  Kiln = (x, y, z) -> (y, -x, z): image right -> +X, toward the camera -> -Y.
"""
from __future__ import annotations

import numpy as np

from ..meshio import RawMesh, SourceMesh, normalise

# rows map a source point (column vector) into Kiln's frame; both proper rotations (det +1)
SHAP_E_TO_KILN = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])
TRIPOSR_TO_KILN = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def to_kiln(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None, rotation: np.ndarray) -> SourceMesh:
    """A model's mesh (its own frame, any scale) -> a SourceMesh in Kiln's cube: rotated into Kiln's
    axes, then normalised like any external mesh (bottom-centre on the ground, largest side 1.45),
    faces wound outward. `colors` are sRGB in [0, 1] (None: mid grey)."""
    from ..mesh import MeshExtractionError

    v = np.asarray(vertices, np.float64) @ np.asarray(rotation, np.float64).T
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(v) == 0 or len(f) == 0:
        raise MeshExtractionError("the model produced no surface")
    if not np.all(np.isfinite(v)):
        raise MeshExtractionError("the model produced non-finite vertex positions")
    c = np.full((len(v), 3), 0.5, np.float32) if colors is None else np.clip(np.asarray(colors, np.float32), 0, 1)
    src = normalise(RawMesh(v, f, c, up="z"), up="z")
    faces32 = src.faces.astype(np.int32)
    if _signed_volume(src.vertices, faces32) < 0:
        faces32 = faces32[:, ::-1].copy()
    return SourceMesh(src.vertices.astype(np.float32), faces32, src.colors.astype(np.float32), src.normalisation)


def _signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)
