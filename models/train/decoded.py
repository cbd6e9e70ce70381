"""A loss on predicted latents through the frozen autoencoder: what the decoded field shows,
not how far the latent is from its target. Plain latent MSE weighs every latent number alike,
and the decoder is far more sensitive to some (a table's thin top, a chair's leg joints) than
to others; the images and text trainings add this loss in their second stage."""
from __future__ import annotations

import numpy as np
import torch

from ..triplane.autoencoder import decoded_field_loss


class DecodedField:
    """The decoded-field loss: predicted normalised latents -> frozen autoencoder decoder -> SDF
    and colour at random query points of each asset (its training samples), against the exact
    values, with the autoencoder's own reconstruction loss."""

    def __init__(self, ae, data: dict, mean: torch.Tensor, std: torch.Tensor, points: int):
        self.ae = ae.eval().requires_grad_(False)
        self.query, self.sdf, self.rgb = data["query"], data["sdf"], data["rgb"]
        self.mean, self.std, self.points = mean, std, points

    def loss(self, latent_n: torch.Tensor, assets: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        pick = rng.integers(0, self.query.shape[1], (len(assets), self.points))
        dev = latent_n.device

        def take(a):
            return torch.from_numpy(a[assets[:, None], pick].astype(np.float32)).to(dev)

        return decoded_field_loss(self.ae, latent_n * self.std + self.mean, take(self.query), take(self.sdf),
                                  take(self.rgb))
