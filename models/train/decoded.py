"""A loss on predicted latents through the frozen autoencoder: what the decoded field shows,
not how far the latent is from its target. Plain latent MSE weighs every latent number alike,
and the decoder is far more sensitive to some (a table's thin top, a chair's leg joints) than
to others; the images and text trainings add this loss in their second stage, and the images
planes model (version 2) is trained on it alone (`planes_loss`)."""
from __future__ import annotations

import numpy as np
import torch

from ..triplane.autoencoder import decoded_field_loss, field_losses


class DecodedField:
    """The decoded-field loss: predicted normalised latents -> frozen autoencoder decoder -> SDF
    and colour at random query points of each asset (its training samples), against the exact
    values, with the autoencoder's own reconstruction loss. With device set, the samples are
    held there (float16) and picked there: on a GPU the per-step gather stays off the host."""

    def __init__(self, ae, data: dict, mean: torch.Tensor, std: torch.Tensor, points: int,
                 device: torch.device | None = None):
        self.ae = ae.eval().requires_grad_(False)
        self.mean, self.std, self.points = mean, std, points
        self.device = device
        if device is None:
            self.query, self.sdf, self.rgb = data["query"], data["sdf"], data["rgb"]
        else:
            self.query, self.sdf, self.rgb = (torch.from_numpy(np.ascontiguousarray(data[k])).to(device)
                                              for k in ("query", "sdf", "rgb"))

    def samples(self, assets: np.ndarray, rng: np.random.Generator, device: torch.device):
        """(points (B, M, 3), sdf (B, M), rgb (B, M, 3)) float32 on device, M = self.points."""
        pick = rng.integers(0, self.query.shape[1], (len(assets), self.points))
        if self.device is None:
            return tuple(torch.from_numpy(a[assets[:, None], pick].astype(np.float32)).to(device)
                         for a in (self.query, self.sdf, self.rgb))
        rows = torch.from_numpy(assets[:, None]).to(self.device)
        cols = torch.from_numpy(pick).to(self.device)
        return tuple(a[rows, cols].float().to(device) for a in (self.query, self.sdf, self.rgb))

    def loss(self, latent_n: torch.Tensor, assets: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        points, sdf, rgb = self.samples(assets, rng, latent_n.device)
        return decoded_field_loss(self.ae, latent_n * self.std + self.mean, points, sdf, rgb)

    def planes_loss(self, planes: torch.Tensor, assets: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """The same loss on full planes (B, 3, Cp, P, P) read by the frozen field MLP."""
        points, sdf_gt, rgb_gt = self.samples(assets, rng, planes.device)
        sdf, rgb = self.ae.query(planes, points)
        sdf_loss, rgb_mse, _ = field_losses(sdf, rgb, sdf_gt, rgb_gt, self.ae.cfg.sdf_clamp)
        return sdf_loss + rgb_mse
