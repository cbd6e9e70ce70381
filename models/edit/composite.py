"""Keep what an edit did not change: the edited field composited over the reference field.

Re-encoding a changed asset moves its untouched parts too (the shared latent space mixes
neighbouring regions, and colour with shape: the encoded *exact* recolour of an asset keeps
only 0.82 of its volume IoU), so no latent edit keeps the rest of the asset exactly. The
decoded fields tell where the edit landed: the edit changes the signed distance by far more
than the latent's drift does (the drift is mostly under 0.01 in cube units). So the shown
asset takes the signed distance from the edited field where it moved more than
`sdf_threshold`, and the colour where it moved more than `colour_threshold` on the surface
(two masks: a recolour must not bring its shape drift along), grown by `dilation` cells and
blended over one cell; everywhere else it is the reference itself.

An edit that cannot change the shape (a grounded recolour, `keep_shape`) takes no shape from
the edited field at all: its latent still drifts a little in shape, and where that drift passes
the threshold it would otherwise show.

A removed part (`removal.PartCut`) is cut out of the shown signed distance after all this: the
latent cannot hold the removal, so the cuts of a chain are kept with it and applied to every
later edit's field.

The reference is the asset the chain of edits started from (a generated or fitted latent), so
five chained edits still show the original wherever none of them changed it. For a user's mesh
the shown field can start from the mesh itself instead (`surface`, a `meshio.MeshField`): the
mesh's own shape and colours wherever the edit did not act, rather than the fitted latent's
approximation of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry import grid_points
from ..mesh import Mesh, extract_mesh
from ..meshio import MeshField, SourceMesh
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import LatentField
from .removal import apply_cuts


@dataclass(frozen=True)
class CompositeConfig:
    resolution: int = 48          # grid the change is measured on (cell 0.043 of the [-1, 1] cube)
    sdf_threshold: float = 0.03   # decoded signed-distance change that counts as edited
    colour_threshold: float = 0.1  # RGB change (largest channel) that counts as recoloured
    near_surface: float = 0.05    # colour changes count only this close to both surfaces
    shape_band: float = 0.1       # shape changes count this close to either surface or across it
    dilation: int = 1             # cells the edited region is grown by
    chunk: int = 262144


def _query_one(ae: TriplaneAutoencoder, planes: torch.Tensor, points: torch.Tensor, chunk: int):
    """One field's decoded planes (1, ...) at points (N, 3) -> sdf (N,), rgb (N, 3)."""
    parts = [ae.query(planes, points[None, i:i + chunk]) for i in range(0, points.shape[0], chunk)]
    return torch.cat([s[0] for s, _ in parts]), torch.cat([c[0] for _, c in parts])


def _soft_region(changed: torch.Tensor, dilation: int) -> torch.Tensor:
    """(R, R, R) bool -> (1, 1, R, R, R) weights: 1 on the grown region, a one-cell ramp outside."""
    m = changed.float()[None, None]
    if dilation > 0:
        m = F.max_pool3d(m, 2 * dilation + 1, stride=1, padding=dilation)
    m = F.avg_pool3d(m, 3, stride=1, padding=1, count_include_pad=False)
    return (m * 1.5).clamp(0.0, 1.0)


@torch.inference_mode()
def change_masks(ae: TriplaneAutoencoder, planes: torch.Tensor,
                 cfg: CompositeConfig = CompositeConfig()) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded planes of the reference and the edit, stacked -> (shape mask, colour mask), each
    (1, 1, R, R, R) over the cube's grid in x, y, z order."""
    n = cfg.resolution
    pts = torch.as_tensor(grid_points(n), device=planes.device)
    (s0, c0), (s1, c1) = (_query_one(ae, planes[i:i + 1], pts, cfg.chunk) for i in (0, 1))
    closest = torch.minimum(s0.abs(), s1.abs())
    # far from both surfaces a distance change shows nowhere; a sign change always does
    in_band = (closest < cfg.shape_band) | ((s0 < 0) != (s1 < 0))
    moved = (((s1 - s0).abs() > cfg.sdf_threshold) & in_band).view(n, n, n)
    # a colour is compared only where both surfaces are: where the shape moved, the reference's
    # colour at the new surface is an extrapolation off its own
    on_both = torch.maximum(s0.abs(), s1.abs()) < cfg.near_surface
    recoloured = (((c1 - c0).abs().amax(-1) > cfg.colour_threshold) & on_both).view(n, n, n)
    return _soft_region(moved, cfg.dilation), _soft_region(recoloured, cfg.dilation)


def _sample(mask: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    # grid_sample reads (x, y, z) as (W, H, D): the mask's axes are (x, y, z) = (D, H, W)
    grid = points[:, [2, 1, 0]].view(1, -1, 1, 1, 3)
    return F.grid_sample(mask, grid, mode="bilinear", align_corners=True).view(-1)


class CompositeField:
    """An edit shown over its reference: numpy callables like `LatentField`, for mesh extraction
    and evaluation. `surface` (anything with `sdf(points)` and `rgb(points)`) replaces the
    reference latent's decoding as what is shown where the edit did not act; its colour stays
    on a moved surface unless the edit changed the colour there (a grey mesh made taller stays
    grey; a Kiln asset's moved part carries the edit's colour).
    `cuts` are removed parts cut out of the shown shape (models/edit/removal.py).
    `share_edited()` says how much of the cube took the edit's shape and colour."""

    def __init__(self, ae: TriplaneAutoencoder, reference: torch.Tensor, edited: torch.Tensor,
                 cfg: CompositeConfig = CompositeConfig(), surface=None, keep_shape: bool = False, cuts=()):
        self.ae, self.cfg, self.surface, self.cuts = ae, cfg, surface, list(cuts or ())
        with torch.inference_mode():
            self.planes = ae.decode(torch.cat([reference[:1].to(edited.device), edited[:1]]))
        self.shape_mask, self.colour_mask = change_masks(ae, self.planes, cfg)
        if keep_shape:
            self.shape_mask = torch.zeros_like(self.shape_mask)

    @torch.inference_mode()
    def _shown(self, points: np.ndarray, want: int) -> torch.Tensor:
        """want 0: signed distance (N,); want 1: colour (N, 3)."""
        p = torch.as_tensor(np.asarray(points, np.float32), device=self.planes.device).view(-1, 3)
        weight = _sample(self.shape_mask, p)
        if want == 1:
            colour = _sample(self.colour_mask, p)
            # a moved surface carries the edit's colour, except over a user's mesh, whose own
            # colour the latents only approximate
            weight = colour if self.surface is not None else torch.maximum(weight, colour)
        if self.surface is not None:
            base = torch.as_tensor((self.surface.sdf, self.surface.rgb)[want](points), device=p.device)
        else:
            base = _query_one(self.ae, self.planes[:1], p, self.cfg.chunk)[want]
        acted = weight > 0  # the edited field is read only where it is shown
        if bool(acted.any()):
            edited = _query_one(self.ae, self.planes[1:], p[acted], self.cfg.chunk)[want]
            w = weight[acted] if want == 0 else weight[acted, None]
            base[acted] += w * (edited - base[acted])
        return base

    def sdf(self, points: np.ndarray) -> np.ndarray:
        sdf = self._shown(points, 0).float().cpu().numpy()
        return apply_cuts(points, sdf, self.cuts)

    def rgb(self, points: np.ndarray) -> np.ndarray:
        return self._shown(points, 1).float().cpu().numpy()

    def share_edited(self) -> tuple[float, float]:
        """Shares of the grid where the shape and the colour come from the edit; the shape's
        includes where a removed part's cut empties the asset."""
        shaped = (self.shape_mask > 0.5).view(-1).cpu().numpy()
        if self.cuts:
            pts = grid_points(self.cfg.resolution)
            # only near a removed part can its cut empty anything (removal.PartCut.box)
            near = np.zeros(len(pts), bool)
            for cut in self.cuts:
                near |= np.all((pts >= cut.box[0]) & (pts <= cut.box[1]), axis=1)
            sdf = self._shown(pts[near], 0).float().cpu().numpy()
            shaped[near] |= (sdf < 0) & (apply_cuts(pts[near], sdf, self.cuts) >= 0)
        return float(shaped.mean()), float((self.colour_mask > 0.5).float().mean())


def recoloured_mesh(field: CompositeField, src: SourceMesh) -> Mesh:
    """A recolour of a user's mesh (shown with keep_shape: the shape is the mesh's) returned as the
    mesh itself: its own triangles, its own vertex colours where the edit did not recolour, and
    the edited latent's colour where it did, blended by the colour mask as the composite shows it.
    No remeshing, so the artist's topology, vertex count and layout survive the edit."""
    with torch.inference_mode():
        p = torch.as_tensor(np.asarray(src.vertices, np.float32), device=field.planes.device)
        w = _sample(field.colour_mask, p)[:, None].float().cpu().numpy()
        edited = _query_one(field.ae, field.planes[1:], p, field.cfg.chunk)[1].float().cpu().numpy()
    colours = src.colors + w * (edited - src.colors)
    return Mesh(np.asarray(src.vertices, np.float32), np.asarray(src.faces, np.int32),
                np.clip(colours, 0.0, 1.0).astype(np.float32))


# the surface field's distances are exact up to this far from the mesh: past the coarsest
# cell of mesh extraction's surface search (0.112 at 32^3), which is as far as they are read
SURFACE_MAX_DISTANCE = 0.15


def mesh_surface(src: SourceMesh, seed: int = 0, check=None) -> MeshField:
    """A user's normalised mesh as the field an edit of it is shown over."""
    return MeshField(src, np.random.default_rng([seed, 0x53555246]), check=check, max_distance=SURFACE_MAX_DISTANCE,
                     plane_distance=True)


class CutField:
    """A field (`sdf`, `rgb` callables) with removed parts cut out of its shape."""

    def __init__(self, field, cuts):
        self.field, self.cuts = field, list(cuts)

    def sdf(self, points: np.ndarray) -> np.ndarray:
        return apply_cuts(points, self.field.sdf(points), self.cuts)

    def rgb(self, points: np.ndarray) -> np.ndarray:
        return self.field.rgb(points)


def shown_field(ae: TriplaneAutoencoder, reference: torch.Tensor, edited: torch.Tensor, composite: bool = True,
                cfg: CompositeConfig = CompositeConfig(), keep_shape: bool = False, cuts=()):
    """The field an edit is meshed from: composited over its reference, or (composite=False) the
    edited latent's own decoding; either with the chain's removed parts cut out."""
    if composite:
        return CompositeField(ae, reference, edited, cfg, keep_shape=keep_shape, cuts=cuts)
    return CutField(LatentField(ae, edited), cuts) if cuts else LatentField(ae, edited)


def composite_mesh(ae: TriplaneAutoencoder, reference: torch.Tensor, edited: torch.Tensor, resolution: int = 128,
                   progress=None, cancel=None, min_part: float = 0.0, cfg: CompositeConfig = CompositeConfig(),
                   surface=None, keep_shape: bool = False, cuts=()) -> tuple[Mesh, CompositeField]:
    """The coloured mesh of an edit composited over its reference, or over `surface` (the
    backend's edit output), with the chain's removed parts cut out."""
    field = CompositeField(ae, reference, edited, cfg, surface, keep_shape, cuts)
    return extract_mesh(field.sdf, field.rgb, resolution, progress=progress, cancel=cancel, min_part=min_part), field
