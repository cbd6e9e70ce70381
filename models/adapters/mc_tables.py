"""Marching-cubes lookup tables in the layout of diffusers' Shap-E `MeshDecoder` (`cases`
(256, 5, 3) edge indices, `masks` (256, 5) used triangles).

Those tables are buffers stored in the published renderer checkpoint; a renderer built from
its config alone has them all zero and meshes nothing. They are rebuilt here from
scikit-image's classic (Lorensen) marching cubes run on each of the 256 corner sign patterns
of one cube. Conventions (from `MeshDecoder.forward`): corner (x, y, z) in {0, 1}^3 is bit
x + 2y + 4z, a set bit means the field is > 0 (inside); edge e = 4 * axis + a + 2b, where
(a, b) are the corner coordinates on the two other axes in increasing axis order. Triangles
are wound counter-clockwise seen from outside.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def shap_e_mc_tables() -> tuple[np.ndarray, np.ndarray]:
    from skimage.measure import marching_cubes

    cases = np.zeros((256, 5, 3), np.int64)
    masks = np.zeros((256, 5), bool)
    for case in range(1, 255):
        vol = np.full((2, 2, 2), -1.0, np.float32)
        for corner in range(8):
            if case >> corner & 1:
                vol[corner & 1, corner >> 1 & 1, corner >> 2 & 1] = 1.0
        verts, tris, _, _ = marching_cubes(vol, 0.0, method="lorensen")
        edges = []
        for p in verts:  # every vertex is an edge midpoint of the unit cube
            axis = int(np.argmin(np.abs(p - 0.5)))
            a, b = (int(round(p[i])) for i in range(3) if i != axis)
            edges.append(4 * axis + a + 2 * b)
        if len(tris) > 5:
            raise AssertionError(f"case {case}: {len(tris)} triangles")
        for j, tri in enumerate(tris):
            cases[case, j] = [edges[tri[0]], edges[tri[2]], edges[tri[1]]]  # outward winding
            masks[case, j] = True
    return cases, masks


def fill_mesh_decoder_tables(mesh_decoder) -> bool:
    """Fill a diffusers `MeshDecoder`'s tables when they are empty (built from a config without
    weights). Returns True when it filled them, False when the checkpoint already had them."""
    import torch

    if bool(mesh_decoder.masks.any()):
        return False
    cases, masks = shap_e_mc_tables()
    with torch.no_grad():
        mesh_decoder.cases.copy_(torch.from_numpy(cases).to(mesh_decoder.cases.device))
        mesh_decoder.masks.copy_(torch.from_numpy(masks).to(mesh_decoder.masks.device))
    return True
