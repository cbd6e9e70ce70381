"""Cameras and two renderers for the image reconstructor.

- `sphere_trace`: exact renders of procedural assets (training and evaluation images): sphere
  tracing of the world's signed distance, Lambert shading with a jittered light, a plain
  background; numpy, any SDF/colour callable.
- `render_field`: a differentiable render of a decoded triplane (GTR-style refinement):
  occupancy from the SDF along each ray, front-to-back alpha compositing of colour.

Kiln's frame (DESIGN.md): +Z up, the asset's front faces -Y. The Front view looks from -Y
toward +Y (image right = +X, image up = +Z); the Back view looks from +Y toward -Y (image
right = -X), so a back image mirrored left-right lines up with the front image's columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

VIEWS = ("front", "back")


@dataclass(frozen=True)
class Camera:
    view: str = "front"          # "front" | "back"
    azimuth: float = 0.0         # degrees about +Z, added to the view's own direction
    elevation: float = 0.0       # degrees above the horizon
    distance: float = 3.2        # from the look-at point
    fov: float = 40.0            # vertical field of view, degrees; 0 = orthographic
    ortho_half: float = 1.0      # half the image's extent in world units when orthographic
    target: tuple = (0.0, 0.0, 0.0)

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(eye, forward, right, up), unit vectors, float64."""
        az = np.radians(self.azimuth + (180.0 if self.view == "back" else 0.0))
        el = np.radians(self.elevation)
        back = np.array([np.sin(az) * np.cos(el), -np.cos(az) * np.cos(el), np.sin(el)])  # target -> eye
        eye = np.asarray(self.target, np.float64) + self.distance * back
        forward = -back
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        return eye, forward, right, np.cross(right, forward)

    def rays(self, res: int) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins and unit directions (res*res, 3), row 0 at the top of the image."""
        eye, fwd, right, up = self.basis()
        s = (np.arange(res) + 0.5) / res * 2.0 - 1.0  # pixel centres in [-1, 1]
        u, v = np.meshgrid(s, -s)                     # image x to the right, y up
        u, v = u.reshape(-1, 1), v.reshape(-1, 1)
        if self.fov <= 0:
            origins = eye + (u * right + v * up) * self.ortho_half
            dirs = np.broadcast_to(fwd, origins.shape).copy()
        else:
            h = np.tan(np.radians(self.fov) / 2.0)
            dirs = fwd + (u * right + v * up) * h
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            origins = np.broadcast_to(eye, dirs.shape).copy()
        return origins.astype(np.float32), dirs.astype(np.float32)


def random_camera(rng: np.random.Generator, view: str) -> Camera:
    """Jittered views around the canonical Front/Back: elevation, azimuth, distance, focal
    length, a fifth orthographic (Blender's numpad views), and a slightly off-centre target."""
    ortho = rng.random() < 0.2
    fov = 0.0 if ortho else float(rng.uniform(25.0, 55.0))
    # frame the unit cube at about the same size whatever the focal length
    distance = 1.25 / np.tan(np.radians(max(fov, 1.0)) / 2.0) * float(rng.uniform(0.95, 1.15)) if not ortho else 4.0
    return Camera(view, azimuth=float(rng.uniform(-12, 12)), elevation=float(rng.uniform(-5, 20)),
                  distance=float(distance), fov=fov, ortho_half=float(rng.uniform(0.95, 1.15)),
                  target=tuple(rng.uniform(-0.05, 0.05, 3).tolist()))


def canonical_camera(view: str = "front") -> Camera:
    """The view an artist's front/back image is assumed to be: orthographic, level, centred."""
    return Camera(view, fov=0.0, distance=4.0, ortho_half=1.1)


def _intersect_cube(o: np.ndarray, d: np.ndarray, half: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-9, 1e-9, d)
    t0, t1 = (-half - o) * inv, (half - o) * inv
    near = np.minimum(t0, t1).max(1)
    far = np.maximum(t0, t1).min(1)
    return np.maximum(near, 0.0), far


def sphere_trace(query, camera: Camera, res: int, light: np.ndarray, background: np.ndarray,
                 ambient: float = 0.35, max_steps: int = 64, eps: float = 2e-3) -> tuple[np.ndarray, np.ndarray]:
    """query(points (N, 3)) -> (sdf (N,), rgb (N, 3)). Returns the image (res, res, 3) on the
    background and the object's mask (res, res), float32 in [0, 1]."""
    o, d = camera.rays(res)
    t, far = _intersect_cube(o, d)
    active = np.flatnonzero(t < far)
    hit = np.zeros(len(o), bool)
    for _ in range(max_steps):
        if not len(active):
            break
        p = o[active] + d[active] * t[active, None]
        sdf = query(p)[0]
        done = sdf < eps
        hit[active[done]] = True
        t[active] += np.maximum(sdf, eps * 0.5) * 0.95
        active = active[~done & (t[active] < far[active])]
    img = np.broadcast_to(background.astype(np.float32), (len(o), 3)).copy()
    idx = np.flatnonzero(hit)
    if len(idx):
        p = o[idx] + d[idx] * t[idx, None]
        _, rgb = query(p)
        h = 2e-3
        grad = np.stack([query(p + h * e)[0] - query(p - h * e)[0] for e in np.eye(3, dtype=np.float32)], 1)
        n = grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-8)
        lambert = np.clip(n @ light, 0.0, 1.0)
        img[idx] = np.clip(rgb * (ambient + (1.0 - ambient) * lambert[:, None]), 0.0, 1.0)
    return img.reshape(res, res, 3), hit.reshape(res, res).astype(np.float32)


def random_lighting(rng: np.random.Generator, camera: Camera) -> np.ndarray:
    """A key light from the camera's side of the object, above it, jittered."""
    eye, fwd, right, up = camera.basis()
    light = -fwd + rng.uniform(-0.7, 0.7) * right + rng.uniform(0.2, 1.0) * up
    return (light / np.linalg.norm(light)).astype(np.float32)


def random_background(rng: np.random.Generator) -> np.ndarray:
    """White (sketches, product shots), grey (Blender's viewport and renders) or a pale colour."""
    r = rng.random()
    if r < 0.4:
        return np.ones(3, np.float32) * float(rng.uniform(0.9, 1.0))
    if r < 0.75:
        return np.ones(3, np.float32) * float(rng.uniform(0.15, 0.6))
    return rng.uniform(0.5, 1.0, 3).astype(np.float32)


# ---------------------------------------------------------------- differentiable render of a field


def render_field(query, camera: Camera, res: int, samples: int = 48, sharpness: float = 60.0,
                 background: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """query(points (1, N, 3) tensor) -> (sdf (1, N), rgb (1, N, 3)). Occupancy sigmoid(-k sdf)
    composited front to back along `samples` points per ray inside the cube. Returns RGB on a
    `background` grey (res, res, 3) and the alpha (res, res), both differentiable."""
    o, d = camera.rays(res)
    near, far = _intersect_cube(o, d)
    hits_cube = torch.from_numpy(near < far)  # rays that miss the cube see nothing (the field is not defined there)
    far = np.maximum(far, near + 1e-3)
    dev = _device_of(query)
    o, d = torch.from_numpy(o).to(dev), torch.from_numpy(d).to(dev)
    near, far = torch.from_numpy(near).to(dev), torch.from_numpy(far).to(dev)
    s = (torch.arange(samples, device=dev) + 0.5) / samples
    t = near[:, None] + (far - near)[:, None] * s[None]                    # (R, S)
    pts = o[:, None] + d[:, None] * t[..., None]                           # (R, S, 3)
    sdf, rgb = query(pts.reshape(1, -1, 3))
    occ = torch.sigmoid(-sharpness * sdf.reshape(len(o), samples)) * hits_cube.to(dev)[:, None]
    trans = torch.cumprod(torch.cat([torch.ones_like(occ[:, :1]), 1.0 - occ[:, :-1]], 1), 1)
    w = occ * trans
    alpha = w.sum(1)
    colour = (w[..., None] * rgb.reshape(len(o), samples, 3)).sum(1) + (1.0 - alpha)[:, None] * background
    return colour.reshape(res, res, 3), alpha.reshape(res, res)


def _device_of(query) -> torch.device:
    dev = getattr(query, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")
