"""Front (+ optional back) image -> latent -> coloured mesh, the inference API the backend calls.

    rec = ImagesToAsset.load(autoencoder, device=device)
    latent, info = rec.reconstruct(front_rgba, back_rgba, refine_steps=0)

Feed-forward reconstruction takes one pass of the transformer. With refine_steps > 0 the
latent is then optimised GTR-style so that differentiable renders of the decoded field match
the input image(s) in silhouette and colour, with a pull back toward the feed-forward latent
(the images say nothing about the sides, which must not drift).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoint import WEIGHTS_DIR, load_network
from ..geometry import grid_points
from ..mesh import Cancelled
from .model import ReconstructorConfig, TriplaneReconstructor
from .preprocess import NoObjectError, crop_window, prepare_image
from .render import Camera, canonical_camera, render_field

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "images.safetensors")
REFINE_RES = 32          # refinement renders at half the model's input resolution
REFINE_SAMPLES = 32      # points per ray through the cube
DEFAULT_REFINE_STEPS = 10
# Adam step on the normalised latent. Measured on 13 held-out assets (10 steps, IoU before 0.644):
# lr 0.03 -> 0.596, 0.01 -> 0.643, 0.005 -> 0.648; a stronger pull to the feed-forward latent
# (0.2 -> 1 or 5) at lr 0.03 helped less (0.601, 0.615): two views cannot tell depth, so large
# steps move material where the images say nothing.
REFINE_LR = 0.005
REFINE_ANCHOR = 0.2     # weight of ||z - z_feedforward||^2 (per element, normalised latent units)
# A view whose outline the result matches worse than this gets a warning (`outline_iou`).
# Measured (models/cards/images.md, 65 held-out renders with the training jitter): 1 front of 65
# and 2 backs of 65 fall below it (medians 0.77, 0.80); a drawn letter K gives 0.31, a crescent
# 0.37; with another asset's back, 48% of the results fall below it in a view.
OUTLINE_WARN_IOU = 0.4
OUTLINE_GRID = 32       # occupancy grid the result's outline is projected from (33k field queries, ~40 ms)


@dataclass
class ImageModel:
    net: TriplaneReconstructor
    latent_mean: torch.Tensor   # (3, C, 1, 1)
    latent_std: torch.Tensor
    meta: dict

    @classmethod
    def load(cls, path: str = DEFAULT_WEIGHTS, device="cpu") -> "ImageModel":
        net, state, meta = load_network(path, lambda c: TriplaneReconstructor(ReconstructorConfig(**c)), "net",
                                        device, "python -m models.train images")
        return cls(net, state["latent_mean"], state["latent_std"], meta)


class ImagesToAsset:
    def __init__(self, model: ImageModel, autoencoder):
        self.model = model
        self.ae = autoencoder

    @classmethod
    def load(cls, autoencoder, path: str = DEFAULT_WEIGHTS, device="cpu") -> "ImagesToAsset":
        return cls(ImageModel.load(path, device), autoencoder)

    @property
    def device(self) -> torch.device:
        return self.model.latent_mean.device

    @property
    def frame(self) -> str:
        """Where reconstructions stand (`images.frame`): "image" (on the ground, centred, largest
        side TARGET_EXTENT) or, for checkpoints before 1.2, "asset" (the training asset's own size)."""
        return str(self.model.meta.get("frame", "asset"))

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3|4) float in [0, 1] -> (1, 4, S, S) on the model's device."""
        size = self.model.net.cfg.image_size
        return torch.from_numpy(prepare_image(image, size))[None].to(self.device)

    @torch.inference_mode()
    def feed_forward(self, front: torch.Tensor, back: torch.Tensor | None = None) -> torch.Tensor:
        """Prepared images -> latent (1, 3, C, R, R) in the autoencoder's units."""
        z = self.model.net(front, back) if back is not None else self.model.net(front)
        return z * self.model.latent_std + self.model.latent_mean

    def prepare_views(self, front: np.ndarray, back: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """Images (H, W, 3|4) float in [0, 1] -> {"front": (1, 4, S, S)[, "back": ...]}."""
        views = {"front": self.prepare(front)}
        if back is not None:
            views["back"] = self.prepare(back)
        return views

    def reconstruct(self, front: np.ndarray, back: np.ndarray | None = None, refine_steps: int = 0,
                    progress: Callable[[float, str], None] | None = None,
                    cancel: Callable[[], bool] | None = None) -> tuple[torch.Tensor, dict]:
        """Images (H, W, 3|4) float in [0, 1] -> latent and an info dict (timings, refinement figures)."""
        return self.reconstruct_views(self.prepare_views(front, back), refine_steps, progress, cancel)

    def reconstruct_views(self, views: dict[str, torch.Tensor], refine_steps: int = 0,
                          progress: Callable[[float, str], None] | None = None,
                          cancel: Callable[[], bool] | None = None) -> tuple[torch.Tensor, dict]:
        """Prepared views (`prepare_views`) -> latent and an info dict."""
        t = time.perf_counter()
        latent = self.feed_forward(views["front"], views.get("back"))
        info = {"views": list(views), "feed_forward_s": round(time.perf_counter() - t, 4)}
        if progress:
            progress(1.0 if refine_steps <= 0 else 0.1, "reconstructed")
        if refine_steps > 0:
            t = time.perf_counter()
            latent, figures = self.refine(latent, views, refine_steps, progress, cancel)
            info["refine"] = {**figures, "steps": refine_steps, "seconds": round(time.perf_counter() - t, 3)}
        t = time.perf_counter()
        info["outline_iou"] = self.outline_agreement(latent, views)
        info["outline_s"] = round(time.perf_counter() - t, 4)
        return latent, info

    @torch.inference_mode()
    def outline_agreement(self, latent: torch.Tensor, views: dict) -> dict[str, float]:
        """Per view, the silhouette IoU of the decoded result seen from that side against the
        prepared input's: how well the asset matches what the image shows, whatever went wrong
        (an object unlike any the model knows, a back of another object). The result's outline
        is its occupancy on a coarse grid projected along Y (orthographic: the back's is the
        front's mirrored), framed by the same preparation as the input."""
        res = OUTLINE_GRID
        planes = self.ae.decode(latent)
        points = torch.as_tensor(grid_points(res), device=planes.device)
        # within half a cell of the surface: a part thinner than a cell has no grid point inside it
        near = 0.5 * 2.0 / (res - 1)
        inside = (self.ae.query(planes, points[None])[0][0] < near).view(res, res, res)  # (x, y, z)
        front = inside.any(dim=1).T.flip(0).float().cpu().numpy()  # rows from the top (+Z), columns along +X
        out = {}
        for name, view in views.items():
            seen = front if name == "front" else front[:, ::-1]  # from behind, +X is on the left
            try:
                alpha = prepare_image(np.repeat(seen[..., None], 4, -1), view.shape[-1])[3]
            except NoObjectError:  # nothing decoded
                out[name] = 0.0
                continue
            mine = _at_render_res(torch.from_numpy(alpha)[None, None])[0] > 0.5
            theirs = _at_render_res(view.cpu())[3] > 0.5
            out[name] = round(float((mine & theirs).sum()) / max(1, int((mine | theirs).sum())), 4)
        return out

    def _query(self, planes: torch.Tensor):
        def query(points):
            return self.ae.query(planes, points)
        query.device = planes.device
        return query

    def view_cameras(self, latent: torch.Tensor, views: dict) -> dict[str, Camera]:
        """Orthographic cameras that frame the decoded object as `prepare_image` framed the input:
        the crop window found on a render of the feed-forward latent's own silhouette."""
        cams = {}
        with torch.inference_mode():
            planes = self.ae.decode(latent)
            for name in views:
                base = canonical_camera(name)
                _, alpha = render_field(self._query(planes), base, 64)
                try:
                    cx, cy, half = crop_window(alpha.cpu().numpy(), base.ortho_half)
                except NoObjectError:  # nothing decoded to frame: match the whole canonical view
                    cams[name] = base
                    continue
                _, _, right, up = base.basis()
                cams[name] = Camera(name, fov=0.0, distance=base.distance, ortho_half=half,
                                    target=tuple((cx * right + cy * up).tolist()))
        return cams

    def refine(self, latent: torch.Tensor, views: dict, steps: int, progress=None, cancel=None
               ) -> tuple[torch.Tensor, dict]:
        """GTR-style: optimise the latent against the prepared view(s); returns it and the
        render error (silhouette IoU, colour L1 inside the object) before and after."""
        cams = self.view_cameras(latent, views)
        targets = {k: _at_render_res(v) for k, v in views.items()}
        mean, std = self.model.latent_mean, self.model.latent_std
        anchor = ((latent - mean) / std).detach()
        z = anchor.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=REFINE_LR)
        for p in self.ae.parameters():
            p.requires_grad_(False)
        before = None
        try:
            for step in range(steps + 1):
                if cancel is not None and cancel():
                    raise Cancelled()
                planes = self.ae.decode(z * std + mean)
                photo, figures = 0.0, []
                for name, cam in cams.items():
                    rgb, alpha = render_field(self._query(planes), cam, REFINE_RES, REFINE_SAMPLES)
                    tgt_rgb, tgt_alpha = targets[name][:3].permute(1, 2, 0), targets[name][3]
                    photo = photo + F.mse_loss(alpha, tgt_alpha) + _hue_loss(rgb, tgt_rgb, tgt_alpha)
                    figures.append(_render_figures(rgb.detach(), alpha.detach(), tgt_rgb, tgt_alpha))
                if before is None:
                    before = _mean_figures(figures)
                if step == steps:
                    break
                loss = photo + REFINE_ANCHOR * ((z - anchor) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if progress:
                    progress(0.1 + 0.9 * (step + 1) / steps, f"refining {step + 1}/{steps}")
        finally:
            for p in self.ae.parameters():
                p.requires_grad_(True)
        after = _mean_figures(figures)
        return (z.detach() * std + mean), {"before": before, "after": after}


def _at_render_res(view: torch.Tensor) -> torch.Tensor:
    """A prepared view (1, 4, S, S) -> (4, REFINE_RES, REFINE_RES), what its renders are compared with."""
    return F.avg_pool2d(view, view.shape[-1] // REFINE_RES)[0]


def _hue_loss(rgb: torch.Tensor, target: torch.Tensor, target_alpha: torch.Tensor) -> torch.Tensor:
    """Colour loss that ignores brightness: the inputs are shaded (a lit side, a dark side), the
    field's colour is the surface's own, so only the direction of the RGB vector is compared,
    inside the input's silhouette."""
    def direction(c):
        return c / (c.norm(dim=-1, keepdim=True) + 0.05)
    w = target_alpha[..., None]
    return ((direction(rgb) - direction(target)).abs() * w).sum() / (w.sum() * 3 + 1e-6)


def _render_figures(rgb, alpha, tgt_rgb, tgt_alpha) -> dict:
    a, b = alpha > 0.5, tgt_alpha > 0.5
    iou = float((a & b).sum()) / max(1, int((a | b).sum()))
    colour = float((rgb - tgt_rgb).abs().mean(-1)[b].mean()) if b.any() else 0.0
    return {"silhouette_iou": iou, "colour_l1": colour}


def _mean_figures(figures: list[dict]) -> dict:
    return {k: round(float(np.mean([f[k] for f in figures])), 4) for k in figures[0]}
