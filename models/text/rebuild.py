"""A text sample in pieces, rebuilt whole by the image reconstructor (two stages, as Instant3D).

The text model breaks leggy assets apart: a table's top floats above its legs at every seed, a
chair's seat above its legs (models/cards/text.md). The image reconstructor, which learnt from
renders of whole assets with a loss on the decoded field, reconstructs tables and chairs whole.
So a sample still in pieces after the candidates is rendered from the Front and the Back
(orthographic and level, a key light from the camera's side, on white: views like those the
reconstructor learnt from) and the two renders are reconstructed: text -> latent -> views ->
latent, where Instant3D goes text -> views -> triplane. The sample's renders show everything
it has, so what comes back keeps its kind, proportions and colours, in one piece.

The reconstruction stands in the image frame (`images.frame`: on the ground, largest side
TARGET_EXTENT). It is moved back to where the sample stood, at the sample's size, the way a
grounded resize moves an asset (`edit.resize`): its decoded surface samples, moved, are encoded
as a delta onto its latent. So the result is an ordinary latent in the cube, meshed, stored and
edited like any other text asset.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import NoSurfaceError
from ..edit.recolour import decoded_surface
from ..images.data import RENDER_RES
from ..images.frame import from_image_frame, image_frame
from ..images.preprocess import NoObjectError
from ..images.render import Camera, sphere_trace
from ..mesh import grid_points, remove_small_parts, sdf_grid
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import LatentField, encoded_delta


@dataclass(frozen=True)
class RebuildConfig:
    render_res: int = RENDER_RES  # the training renders' size, before the preparation crops them
    ortho_half: float = 1.05      # the views' half extent: the whole cube in view
    bounds_res: int = 64          # grid the sample's bounds are read on (after the floater clean-up)
    points: int = 8192            # decoded surface samples that move the result back (as a resize's)
    mc_res: int = 64


def view_cameras(cfg: RebuildConfig = RebuildConfig()) -> tuple[Camera, Camera]:
    """The Front and Back views a sample is rendered from: orthographic, level, centred."""
    return tuple(Camera(view, fov=0.0, distance=4.0, ortho_half=cfg.ortho_half) for view in ("front", "back"))


def key_light(camera: Camera) -> np.ndarray:
    """A light from the camera's side of the object, to its right and above (within the training
    renders' jitter, `render.random_lighting`)."""
    _, forward, right, up = camera.basis()
    light = -forward + 0.3 * right + 0.6 * up
    return (light / np.linalg.norm(light)).astype(np.float32)


def render_views(field: LatentField, cfg: RebuildConfig = RebuildConfig()) -> list[np.ndarray]:
    """A decoded latent's Front and Back renders (H, W, 4): RGB on white and the exact alpha (the
    preparation uses it rather than estimating the background, so a white asset is seen whole)."""
    white = np.ones(3, np.float32)
    views = []
    for cam in view_cameras(cfg):
        rgb, mask = sphere_trace(field.query, cam, cfg.render_res, key_light(cam), white)
        views.append(np.concatenate([rgb, mask[..., None]], -1))
    return views


def sample_frame(grid: np.ndarray, min_part: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(origin, scale) of the image frame (`images.frame.image_frame`) for a sample's SDF grid
    (`mesh.sdf_grid`) as the backend meshes it (small floaters dropped), or None when it has no
    inside."""
    grid = remove_small_parts(grid, min_part)[0]
    inside = grid_points(grid.shape[0])[grid.reshape(-1) < 0]
    if len(inside) == 0:
        return None
    origin, scale = image_frame(inside[None])
    return origin[0], scale[0]


@torch.inference_mode()
def rebuild_whole(images, ae: TriplaneAutoencoder, latent: torch.Tensor, min_part: float, seed: int = 0,
                  cfg: RebuildConfig = RebuildConfig(), grid: np.ndarray | None = None) -> torch.Tensor | None:
    """A sample's latent (1, ...) -> the image reconstructor's latent of its Front and Back renders,
    moved back into the sample's place and size (module docstring); None for an empty sample or
    one too small to see. `images` is an `images.pipeline.ImagesToAsset` on the autoencoder `ae`;
    `grid`, the sample's SDF grid when it was already made (else one at cfg.bounds_res)."""
    field = LatentField(ae, latent[:1])
    frame = sample_frame(sdf_grid(field.sdf, cfg.bounds_res) if grid is None else grid, min_part)
    if frame is None:
        return None
    front, back = render_views(field, cfg)
    try:
        views = images.prepare_views(front, back)
    except NoObjectError:  # too little of it in view to reconstruct
        return None
    rebuilt = images.feed_forward(views["front"], views["back"])  # no outline check: the views are the sample's own
    try:
        _, pts, rgb = decoded_surface(ae, rebuilt, cfg.points, cfg.mc_res, seed)
    except NoSurfaceError:
        return None
    origin, scale = frame
    placed = from_image_frame(pts[None], origin[None], scale[None])[0]
    cloud = np.concatenate([pts, rgb], 1).astype(np.float32)
    moved = np.concatenate([placed, rgb], 1).astype(np.float32)
    return rebuilt + encoded_delta(ae, moved, cloud)


def rebuilder(images, ae: TriplaneAutoencoder, min_part: float, cfg: RebuildConfig = RebuildConfig()):
    """`rebuild_whole` as the callable `candidates.generate_whole` takes: (latent, seed, the sample's
    SDF grid or None) -> latent or None."""
    return lambda latent, seed, grid=None: rebuild_whole(images, ae, latent, min_part, seed, cfg, grid)
