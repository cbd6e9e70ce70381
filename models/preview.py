"""A small software renderer for previews: dense coloured surface samples, Lambert shading,
z-buffered splats, seen from Blender's default three-quarter front view. Numpy only."""
from __future__ import annotations

import numpy as np

from .geometry import sample_triangles
from .mesh import Mesh, vertex_normals


def _camera(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Rows: right, up, forward (view direction) for a camera orbiting +Z, azimuth 0 = front (-Y)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    eye = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])
    fwd = -eye
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    return np.stack([right, up, fwd])


def render_preview(mesh: Mesh, size: int = 512, azimuth: float = 35.0, elevation: float = 25.0,
                   background=(0.93, 0.93, 0.95), samples: int = 400_000, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 image of the mesh."""
    rng = np.random.default_rng(seed)
    pts, face, bary = sample_triangles(mesh.vertices, mesh.faces, samples, rng)
    col = np.einsum("nk,nkd->nd", bary, mesh.colors[mesh.faces[face]])
    # smooth shading: marching-cubes faces are tiny and their own normals are noisy
    vn = vertex_normals(mesh.vertices, mesh.faces)
    nrm = np.einsum("nk,nkd->nd", bary, vn[mesh.faces[face]])
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
    rot = _camera(azimuth, elevation)
    cam = pts @ rot.T
    n_cam = nrm @ rot.T
    n_cam = np.where(n_cam[:, 2:3] > 0, -n_cam, n_cam)  # light both sides of open surfaces
    light = np.array([-0.4, 0.6, -0.7])
    light /= np.linalg.norm(light)
    shade = 0.35 + 0.65 * np.clip(n_cam @ light, 0, 1)[:, None]
    rgb = np.clip(col * shade, 0, 1)
    centre = 0.5 * (cam[:, :2].min(0) + cam[:, :2].max(0))
    extent = float(np.max(cam[:, :2].max(0) - cam[:, :2].min(0))) * 1.15 + 1e-6
    px = ((cam[:, 0] - centre[0]) / extent + 0.5) * (size - 1)
    py = (0.5 - (cam[:, 1] - centre[1]) / extent) * (size - 1)
    ix, iy = np.round(px).astype(np.int64), np.round(py).astype(np.int64)
    ok = (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
    ix, iy, depth, rgb = ix[ok], iy[ok], cam[ok, 2], rgb[ok]
    image = np.empty((size, size, 3), np.float32)
    image[:] = background
    # 2x2 splats into one z-buffer; the nearest sample wins each pixel
    x = np.concatenate([np.clip(ix + dx, 0, size - 1) for dx in (0, 1, 0, 1)])
    y = np.concatenate([np.clip(iy + dy, 0, size - 1) for dy in (0, 0, 1, 1)])
    z = np.tile(depth, 4).astype(np.float32)  # same precision as the z-buffer, or the test below fails
    c = np.tile(rgb, (4, 1))
    zbuf = np.full((size, size), np.inf, np.float32)
    np.minimum.at(zbuf, (y, x), z)
    keep = z <= zbuf[y, x]
    image[y[keep], x[keep]] = c[keep]
    pixel = extent / (size - 1)
    _fill_pinholes(image, np.isfinite(zbuf) & ~_seen_through(zbuf, OCCLUSION_PIXELS * pixel))
    return (image * 255 + 0.5).astype(np.uint8)


# A pixel this many pixel widths deeper than most of its neighbours shows a surface behind the
# one in front (a gap between the front's splats): a surface inclined up to 80 degrees to the
# view changes depth by under 6 pixel widths a pixel, a chair leg's back is ~11 behind its front.
OCCLUSION_PIXELS = 6.0


def _seen_through(zbuf: np.ndarray, tolerance: float) -> np.ndarray:
    """Pixels whose sample lies behind the surface that covers most of their neighbours (within
    1 pixel, or within 2 for gaps of a few pixels): the splats of the front surface missed them
    and a sample of the back won (speckles of the back's shading on the front)."""
    h, w = zbuf.shape
    out = np.zeros(zbuf.shape, bool)
    for radius in (1, 2):
        pad = np.pad(zbuf, radius, constant_values=np.inf)
        nearer = np.zeros(zbuf.shape, np.int32)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                if dx or dy:
                    nearer += pad[radius + dy:radius + dy + h, radius + dx:radius + dx + w] < zbuf - tolerance * radius
        out |= nearer > ((2 * radius + 1) ** 2 - 1) // 2
    return np.isfinite(zbuf) & out


def _fill_pinholes(image: np.ndarray, filled: np.ndarray, passes: int = 3) -> None:
    """Pixels the splats missed inside the silhouette (>= 5 of 8 neighbours covered)
    take their covered neighbours' mean colour."""
    for _ in range(passes):
        pad_f = np.pad(filled, 1)
        pad_c = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        count = np.zeros(filled.shape, np.float32)
        total = np.zeros(image.shape, np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dx or dy:
                    count += pad_f[1 + dy:1 + dy + filled.shape[0], 1 + dx:1 + dx + filled.shape[1]]
                    total += pad_c[1 + dy:1 + dy + filled.shape[0], 1 + dx:1 + dx + filled.shape[1]]
        hole = ~filled & (count >= 5)
        if not hole.any():
            return
        image[hole] = total[hole] / count[hole][:, None]
        filled |= hole


def save_png(image: np.ndarray, path: str) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)
