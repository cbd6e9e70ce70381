"""Arbitrary meshes in: load (OBJ/PLY/STL/GLB/GLTF/OFF via trimesh), normalise into Kiln's cube,
and turn into what the autoencoder eats (a coloured surface point cloud) or fits against
(signed-distance samples).

Normalisation puts the mesh the way procedural assets stand: centred on the Z axis,
resting on z = GROUND, largest side TARGET_EXTENT. `Normalisation.to_original` maps results back.

Non-watertight meshes: the sign of the distance comes from the nearest surface
normal close to the surface, and from a flood fill of a dilated 128^3 voxelisation further
away, so holes smaller than about two voxels (~0.03) are closed and an open sheet becomes a
thin solid on its back side. Meshes without colours are treated as mid grey.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .geometry import sample_triangles
from .world.asset import CUBE_LIMIT, TARGET_EXTENT
from .world.shapes import GROUND

MESH_FORMATS = (".obj", ".ply", ".stl", ".glb", ".gltf", ".off")
MAX_MESH_BYTES = 512 * 1024 * 1024
DEFAULT_GREY = 0.5


class MeshInputError(ValueError):
    """A mesh file Kiln cannot use; `code` is the wire protocol's error code."""

    def __init__(self, message: str, code: str = "bad_input"):
        super().__init__(message)
        self.code = code


def y_up_to_z_up(v: np.ndarray) -> np.ndarray:
    return np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)


def z_up_to_y_up(v: np.ndarray) -> np.ndarray:
    return np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1)


@dataclass(frozen=True)
class Normalisation:
    """kiln = (zup(original) - centre) * scale + (0, 0, GROUND), where zup turns a +Y-up file
    into Kiln's +Z-up frame and `centre` is the bottom-centre of the +Z-up bounds."""

    centre: tuple   # +Z-up point mapped to (0, 0, GROUND)
    scale: float
    up: str = "z"   # the original file's up axis

    def to_kiln(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, np.float64)
        v = y_up_to_z_up(v) if self.up == "y" else v
        return ((v - np.asarray(self.centre)) * self.scale + np.array([0.0, 0.0, GROUND])).astype(np.float32)

    def to_original_z_up(self, v: np.ndarray) -> np.ndarray:
        """Undo the move and scale but stay +Z up (what Blender and Kiln's GLB writer expect)."""
        v = (np.asarray(v, np.float64) - np.array([0.0, 0.0, GROUND])) / self.scale + np.asarray(self.centre)
        return v.astype(np.float32)

    def to_original(self, v: np.ndarray) -> np.ndarray:
        """Back into the file's own coordinates (its up axis included)."""
        v = self.to_original_z_up(v)
        return z_up_to_y_up(v) if self.up == "y" else v

    def to_dict(self) -> dict:
        return {"centre": list(self.centre), "scale": self.scale, "up": self.up}


@dataclass
class SourceMesh:
    vertices: np.ndarray   # (V, 3) in Kiln's cube
    faces: np.ndarray      # (F, 3)
    colors: np.ndarray     # (V, 3) in [0, 1]
    normalisation: Normalisation


@dataclass
class RawMesh:
    """A mesh as read from a file: triangles and per-vertex sRGB colours in [0, 1]."""

    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray     # (F, 3) int64
    colors: np.ndarray    # (V, 3) float32
    up: str = "z"         # glTF files are +Y up; OBJ/PLY/STL/OFF are taken as +Z up (Blender's frame)


def load_mesh(path: str) -> RawMesh:
    """Read a mesh file with trimesh; every failure becomes a MeshInputError with a clear message."""
    import trimesh

    if not os.path.isfile(path):
        raise MeshInputError(f"mesh file not found: {path}", "not_found")
    ext = os.path.splitext(path)[1].lower()
    if ext not in MESH_FORMATS:
        raise MeshInputError(f"unsupported mesh format {ext or '(none)'}: use one of {', '.join(MESH_FORMATS)}")
    size = os.path.getsize(path)
    if size == 0:
        raise MeshInputError(f"mesh file is empty (0 bytes): {path}")
    if size > MAX_MESH_BYTES:
        raise MeshInputError(f"mesh file is too large ({size / 2**20:.0f} MiB > {MAX_MESH_BYTES / 2**20:.0f} MiB)")
    try:
        loaded = trimesh.load(path, process=False)
        parts = _scene_parts(loaded) if isinstance(loaded, trimesh.Scene) else [loaded]
    except Exception as exc:  # trimesh raises many types for corrupt files
        raise MeshInputError(f"could not read {os.path.basename(path)} as {ext[1:].upper()}: {exc}") from None
    parts = [p for p in parts if isinstance(p[0] if isinstance(p, tuple) else p, trimesh.Trimesh)
             and len((p[0] if isinstance(p, tuple) else p).faces)]
    if not parts:
        raise MeshInputError(f"{os.path.basename(path)} contains no triangles")
    linear = ext in (".glb", ".gltf")  # glTF COLOR_0 is linear; other formats store display colours
    raw = from_trimesh_list(parts, linear_colours=linear)
    raw.up = "y" if linear else "z"
    if not np.all(np.isfinite(raw.vertices)):
        raise MeshInputError(f"{os.path.basename(path)} has non-finite vertex coordinates")
    return raw


def _scene_parts(scene) -> list:
    """(geometry, world transform) pairs; the geometry is not copied, since trimesh's
    copy() and Scene.dump() drop the glTF COLOR_0 vertex attribute."""
    out = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        out.append((scene.geometry[name], transform))
    return out


def from_trimesh_list(meshes, linear_colours: bool = False) -> RawMesh:
    """Concatenate trimesh meshes, or (mesh, 4x4 transform) pairs, into one RawMesh."""
    verts, faces, colors, offset = [], [], [], 0
    for item in meshes:
        m, matrix = item if isinstance(item, tuple) else (item, np.eye(4))
        matrix = np.asarray(matrix, np.float64)
        verts.append(np.asarray(m.vertices, np.float64) @ matrix[:3, :3].T + matrix[:3, 3])
        faces.append(np.asarray(m.faces, np.int64) + offset)
        colors.append(_vertex_colors(m, linear_colours))
        offset += len(m.vertices)
    return RawMesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(colors))


def from_trimesh(mesh) -> RawMesh:
    return from_trimesh_list([mesh])


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.power(c, 1 / 2.4) - 0.055).astype(np.float32)


def _vertex_colors(mesh, linear: bool = False) -> np.ndarray:
    n = len(mesh.vertices)
    try:
        visual = mesh.visual
        attr = getattr(visual, "vertex_attributes", {})
        if visual.kind == "texture" and "color" in attr and len(attr["color"]) == n:
            c = np.asarray(attr["color"])[:, :3]
            c = c.astype(np.float32) / (255.0 if np.issubdtype(c.dtype, np.integer) else 1.0)
            return _linear_to_srgb(c) if linear else c
        if visual.kind == "texture":
            visual = visual.to_color()
        if visual.kind in ("vertex", "face"):
            vc = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
            if len(vc) == n:
                return vc
    except Exception:  # a broken texture reference: fall back to grey
        pass
    return np.full((n, 3), DEFAULT_GREY, dtype=np.float32)


def normalise(mesh: RawMesh, up: str | None = None) -> SourceMesh:
    """Move a mesh into Kiln's cube; `up` ('y' | 'z') overrides the file's up axis."""
    return in_frame(mesh, fit_normalisation(mesh, up))


def fit_normalisation(mesh: RawMesh, up: str | None = None) -> Normalisation:
    """The transform that puts a mesh on Kiln's ground, centred, its largest side TARGET_EXTENT."""
    up = up or mesh.up
    if up not in ("y", "z"):
        raise MeshInputError(f"up axis must be 'y' or 'z', got {up!r}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if v.ndim != 2 or len(v) == 0:
        raise MeshInputError("mesh has no vertices")
    v = y_up_to_z_up(v) if up == "y" else v
    lo, hi = v.min(0), v.max(0)
    size = hi - lo
    if size.max() <= 1e-9:
        raise MeshInputError("mesh is degenerate: all vertices coincide")
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]])
    # largest side -> TARGET_EXTENT, but never past the cube (height from GROUND, width around 0)
    scale = min(TARGET_EXTENT / size.max(), (CUBE_LIMIT - GROUND - 0.01) / max(size[2], 1e-9),
                2 * (CUBE_LIMIT - 0.01) / max(size[0], size[1], 1e-9))
    return Normalisation(tuple(float(c) for c in centre), float(scale), up)


def in_frame(mesh: RawMesh, norm: Normalisation) -> SourceMesh:
    """The mesh moved into Kiln's cube by a known transform (one fitted to it, or a stored one)."""
    kv = norm.to_kiln(np.asarray(mesh.vertices, dtype=np.float64))
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if len(faces) == 0 or faces.min() < 0 or faces.max() >= len(kv):
        raise MeshInputError("mesh faces refer to missing vertices")
    tri = kv[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 1e-10:
        raise MeshInputError("mesh is degenerate: its faces have no area")
    return SourceMesh(kv, faces, np.asarray(mesh.colors, np.float32), norm)


def colored_cloud(src: SourceMesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) surface points with colours interpolated from the vertices."""
    pts, face, bary = sample_triangles(src.vertices, src.faces, n, rng)
    rgb = np.einsum("nk,nkd->nd", bary, src.colors[src.faces[face]])
    return np.concatenate([pts, rgb], axis=1).astype(np.float32)


class MeshField:
    """Signed distance and colour of an arbitrary normalised mesh at any points, from dense
    surface samples: the distance to the nearest sample, signed by its face's normal close to
    the surface and by a voxel flood fill further out (so open meshes get a sign too). Used for
    latent fitting (`sdf_samples`) and to show a user's own mesh where an edit did not change
    it (models.edit.composite). With `max_distance`, `sdf` gives points further than that from
    the surface that distance (with their sign): a nearest-neighbour search bounded this way is
    20x faster on a dense grid (colours are always the nearest sample's). With `plane_distance`, points close
    to the surface get their distance to the nearest sample's tangent plane instead of to the
    sample: the sign and size stay consistent between neighbouring points (a mesh extracted from
    the field has no pits where a lateral sample gave the wrong sign). `check()` is called
    between the expensive phases."""

    def __init__(self, src: SourceMesh, rng: np.random.Generator, voxel_res: int = 128, n_dense: int = 200_000,
                 check=None, max_distance: float | None = None, plane_distance: bool = False):
        from scipy import ndimage
        from scipy.spatial import cKDTree

        check = check or (lambda: None)
        self.dense, self.face, bary = sample_triangles(src.vertices, src.faces, n_dense, rng)
        tri = src.vertices[src.faces]
        fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        self.face_normals = fn / np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-12)
        self.dense_rgb = np.einsum("nk,nkd->nd", bary, src.colors[src.faces[self.face]])
        self.tree = cKDTree(self.dense)
        check()
        # occupancy: voxels touched by the surface, then everything not reachable from outside
        self.voxel_res = voxel_res
        ijk = self._voxel(self.dense)
        shell = np.zeros((voxel_res,) * 3, dtype=bool)
        shell[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = True
        self.shell = ndimage.binary_dilation(shell)  # close pinholes between sampled surface voxels
        check()
        self.solid = ndimage.binary_fill_holes(self.shell)
        self.src = src  # the mesh itself: a recolour returns its own triangles (edit.composite.recoloured_mesh)
        self.max_distance, self.plane_distance = max_distance, plane_distance
        check()

    def _voxel(self, pts: np.ndarray) -> np.ndarray:
        return np.clip(((pts + 1) * 0.5 * self.voxel_res).astype(np.int64), 0, self.voxel_res - 1)

    def _signed(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (signed distance, nearest sample index, -1 past max_distance)."""
        if self.max_distance is None:
            dist, nearest = self.tree.query(pts, workers=-1)
        else:
            dist, nearest = self.tree.query(pts, workers=-1, distance_upper_bound=self.max_distance)
            far = ~np.isfinite(dist)
            dist[far], nearest[far] = self.max_distance, -1
        along_normal = np.einsum("ij,ij->i", pts - self.dense[nearest], self.face_normals[self.face[nearest]])
        normal_sign = np.sign(along_normal)
        vox = self._voxel(pts)
        interior = self.solid[vox[:, 0], vox[:, 1], vox[:, 2]] & ~self.shell[vox[:, 0], vox[:, 1], vox[:, 2]]
        voxel_sign = np.where(interior, -1.0, 1.0)
        close = dist < 2.5 * 2.0 / self.voxel_res  # beyond the dilated shell the flood fill decides
        by_normal = close & (normal_sign != 0)
        sign = np.where(by_normal, normal_sign, voxel_sign)
        sdf = np.where(by_normal, along_normal, sign * dist) if self.plane_distance else sign * dist
        return sdf.astype(np.float32), nearest

    def _colours(self, pts: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        far = nearest < 0
        if far.any():
            nearest = nearest.copy()
            nearest[far] = self.tree.query(pts[far], workers=-1)[1]
        return self.dense_rgb[nearest].astype(np.float32)

    def query(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        sdf, nearest = self._signed(pts)
        return sdf, self._colours(pts, nearest)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        return self._signed(np.asarray(points, np.float32).reshape(-1, 3))[0]

    def rgb(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        return self._colours(pts, self.tree.query(pts, workers=-1)[1])


def sdf_samples(src: SourceMesh, n_near: int, n_uniform: int, rng: np.random.Generator,
                voxel_res: int = 128, n_dense: int = 200_000, check=None):
    """Signed-distance (and colour) samples of an arbitrary mesh, for latent fitting and evaluation.
    `check()` is called between the expensive phases (a cancel hook that raises)."""
    field = MeshField(src, rng, voxel_res, n_dense, check)
    base = field.dense[rng.integers(0, n_dense, n_near)]
    sig = np.where(rng.random(n_near) < 0.5, 0.01, 0.05).astype(np.float32)
    near = base + rng.normal(size=base.shape).astype(np.float32) * sig[:, None]
    pts = np.concatenate([near, rng.uniform(-1, 1, (n_uniform, 3)).astype(np.float32)])
    sdf, rgb = field.query(pts)
    return pts.astype(np.float32), sdf, rgb
