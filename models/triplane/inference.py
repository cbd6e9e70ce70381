"""Inference with the triplane autoencoder: encode, fit, decode to a coloured mesh.

All functions take an optional `progress(fraction, message)` and `cancel()`; a
cancel raises `mesh.Cancelled` between chunks / optimisation steps.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..mesh import Cancelled, Mesh, extract_mesh
from ..meshio import SourceMesh, colored_cloud, sdf_samples
from .autoencoder import TriplaneAutoencoder

Progress = Callable[[float, str], None] | None
Cancel = Callable[[], bool] | None


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def encode_cloud(model: TriplaneAutoencoder, cloud: np.ndarray) -> torch.Tensor:
    """(N, 6) or (B, N, 6) coloured points -> latent (B, 3, C, R, R)."""
    t = torch.as_tensor(np.asarray(cloud, np.float32), device=_device(model))
    return model.encode(t[None] if t.ndim == 2 else t)


def encoded_delta(model: TriplaneAutoencoder, edited: np.ndarray, source: np.ndarray) -> torch.Tensor:
    """E(edited) - E(source) for an asset's coloured surface cloud (N, 6) and an edit of it (M, 6):
    the change Kiln's grounded edits add to the source's own latent. The encoder's error is much
    the same for both clouds and cancels; what the source latent holds beyond it is kept."""
    return encode_cloud(model, edited) - encode_cloud(model, source)


def fit_latent(model: TriplaneAutoencoder, latent: torch.Tensor, points: np.ndarray, sdf: np.ndarray,
               rgb: np.ndarray, steps: int = 60, lr: float = 0.03, batch: int = 8192, seed: int = 0,
               progress: Progress = None, cancel: Cancel = None) -> torch.Tensor:
    """A few Adam steps on the latent only (GTR-style per-instance refinement against SDF samples)."""
    return _fit(model, latent, model.decode, points, sdf, rgb, steps, lr, batch, seed, progress, cancel, "latent")


def fit_planes(model: TriplaneAutoencoder, planes: torch.Tensor, points: np.ndarray, sdf: np.ndarray,
               rgb: np.ndarray, steps: int = 200, lr: float = 0.01, batch: int = 8192, seed: int = 0) -> torch.Tensor:
    """Adam steps on the full triplane (1, 3, C', R', R') itself, read by the frozen field MLP: what
    the field could show if anything predicted the planes directly, past the latent's bottleneck
    (a measurement for the evaluation, not a product path)."""
    return _fit(model, planes, lambda p: p, points, sdf, rgb, steps, lr, batch, seed, None, None, "planes")


def _fit(model, start: torch.Tensor, to_planes, points, sdf, rgb, steps, lr, batch, seed, progress, cancel,
         what: str) -> torch.Tensor:
    """Adam on `start` so that the field of to_planes(start) matches SDF (truncated L1) and, near the
    surface, colour samples."""
    dev = _device(model)
    gen = torch.Generator().manual_seed(seed)
    pts = torch.as_tensor(points, device=dev)
    gt_sdf = torch.as_tensor(sdf, device=dev)
    gt_rgb = torch.as_tensor(rgb, device=dev)
    z = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    c = model.cfg.sdf_clamp
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        for step in range(steps):
            if cancel is not None and cancel():
                raise Cancelled()
            idx = torch.randint(0, len(pts), (batch,), generator=gen).to(dev)
            with torch.enable_grad():
                pred_sdf, pred_rgb = model.query(to_planes(z), pts[idx][None])
                near = (gt_sdf[idx].abs() < 0.03).float()
                loss = F.l1_loss(pred_sdf[0].clamp(-c, c), gt_sdf[idx].clamp(-c, c)) + 0.25 * (
                    ((pred_rgb[0] - gt_rgb[idx]).abs().mean(-1) * near).sum() / near.sum().clamp(min=1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            if progress:
                progress((step + 1) / steps, f"fitting {what} {step + 1}/{steps}")
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return z.detach()


class LatentField:
    """A decoded latent as numpy callables for mesh extraction (decode once, query in chunks)."""

    def __init__(self, model: TriplaneAutoencoder, latent: torch.Tensor | None = None,
                 planes: torch.Tensor | None = None):
        """From a latent (decoded here) or, for measurements, from full triplanes (`fit_planes`)."""
        self.model = model
        with torch.inference_mode():
            self.planes = model.decode(latent[:1]) if planes is None else planes[:1]

    @torch.inference_mode()
    def query(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = torch.as_tensor(np.asarray(points, np.float32), device=self.planes.device)[None]
        sdf, rgb = self.model.query(self.planes, p)
        return sdf[0].float().cpu().numpy(), rgb[0].float().cpu().numpy()

    def sdf(self, points: np.ndarray) -> np.ndarray:
        return self.query(points)[0]

    def rgb(self, points: np.ndarray) -> np.ndarray:
        return self.query(points)[1]


def latent_to_mesh(model: TriplaneAutoencoder, latent: torch.Tensor, resolution: int = 128,
                   progress: Progress = None, cancel: Cancel = None, min_part: float = 0.0,
                   start: np.ndarray | None = None) -> Mesh:
    """`start`: a coarser SDF grid of this latent's field already made (`mesh.sdf_grid`)."""
    field = LatentField(model, latent)
    return extract_mesh(field.sdf, field.rgb, resolution, progress=progress, cancel=cancel, min_part=min_part,
                        start=start)


FIT_NEAR, FIT_UNIFORM = 16384, 8192   # a mesh's fitting samples: near its surface, then uniform in the cube


def encode_source_mesh(model: TriplaneAutoencoder, src: SourceMesh, fit_steps: int = 0, seed: int = 0,
                       n_points: int = 2048, progress: Progress = None, cancel: Cancel = None):
    """Encode a normalised mesh; with fit_steps > 0 refine the latent against its SDF samples.
    Returns (latent, samples) where samples = (points, sdf, rgb) or None without fitting."""
    def check():
        if cancel is not None and cancel():
            raise Cancelled()

    rng = np.random.default_rng(seed)
    latent = encode_cloud(model, colored_cloud(src, n_points, rng))
    if fit_steps <= 0:
        return latent, None
    check()
    samples = sdf_samples(src, FIT_NEAR, FIT_UNIFORM, rng, check=check)
    return fit_latent(model, latent, *samples, steps=fit_steps, seed=seed, progress=progress, cancel=cancel), samples
