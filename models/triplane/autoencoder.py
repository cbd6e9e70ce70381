"""The shared triplane latent space of Kiln.

encode: coloured surface points (B, N, 6) -> latent triplane (B, 3, Cl, Rl, Rl)
decode: latent -> full triplane (B, 3, Cp, Rp, Rp)
query:  full triplane + points (B, M, 3) -> signed distance (B, M), RGB (B, M, 3)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AutoencoderConfig
from .layers import PlaneBlock, per_plane, sample_planes, scatter_mean


class PointEncoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c, h = cfg.point_features, cfg.hidden_channels
        self.res = cfg.scatter_res
        self.point_mlp = nn.Sequential(nn.Linear(cfg.point_dim + 24, c), nn.SiLU(), nn.Linear(c, c), nn.SiLU(),
                                       nn.Linear(c, c))
        self.stem = nn.Conv2d(c, h, 3, padding=1)
        self.block1 = PlaneBlock(h)
        self.down = nn.Conv2d(h, h, 3, stride=cfg.scatter_res // cfg.latent_res, padding=1)  # -> latent_res
        self.block2 = PlaneBlock(h)
        self.head = nn.Conv2d(h, 2 * cfg.latent_channels, 3, padding=1)  # mean, log-variance
        # Start with a nearly deterministic posterior (sigma ~ 0.05): with sigma ~ 1 at init the
        # decoder learns to ignore the latent's fine content (colour first) and never recovers.
        with torch.no_grad():
            self.head.bias[cfg.latent_channels:].fill_(-6.0)

    def forward(self, cloud: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xyz = cloud[..., :3]
        freqs = 2.0 ** torch.arange(4, device=cloud.device, dtype=cloud.dtype) * torch.pi
        ang = (xyz.unsqueeze(-1) * freqs).flatten(-2)  # (B, N, 12)
        feats = self.point_mlp(torch.cat([cloud, ang.sin(), ang.cos()], -1))
        planes = scatter_mean(xyz, feats, self.res)
        planes = self.block1(per_plane(self.stem, planes))
        planes = self.block2(per_plane(self.down, planes))
        mean, logvar = per_plane(self.head, planes).chunk(2, dim=2)
        return mean, logvar.clamp(-10, 4)


class LatentDecoder(nn.Module):
    """Compact latent triplane -> full-resolution feature triplane."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        h = cfg.hidden_channels
        self.stem = nn.Conv2d(cfg.latent_channels, h, 3, padding=1)
        self.block1 = PlaneBlock(h)
        self.plane_res = cfg.plane_res
        n_up = (cfg.plane_res // cfg.latent_res).bit_length() - 1
        self.ups = nn.ModuleList(nn.Conv2d(h, h, 3, padding=1) for _ in range(n_up))
        self.block2 = PlaneBlock(h)
        self.head = nn.Sequential(nn.GroupNorm(8, h), nn.SiLU(), nn.Conv2d(h, cfg.plane_channels, 3, padding=1))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        x = self.block1(per_plane(self.stem, latent))
        for up in self.ups:
            if 2 * x.shape[-1] == self.plane_res:  # the second block runs at half the planes' resolution
                x = self.block2(x)
            x = per_plane(lambda t: up(F.interpolate(t, scale_factor=2.0, mode="nearest")), x)
        return per_plane(self.head, x)


class FieldMLP(nn.Module):
    """Triplane features at a point (+ the point) -> signed distance and RGB."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        h = cfg.mlp_hidden
        self.net = nn.Sequential(nn.Linear(3 * cfg.plane_channels + 3, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(),
                                 nn.Linear(h, 4))

    def forward(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(torch.cat([sample_planes(planes, points), points], -1))
        return out[..., 0], torch.sigmoid(out[..., 1:])


class TriplaneAutoencoder(nn.Module):
    def __init__(self, cfg: AutoencoderConfig = AutoencoderConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = PointEncoder(cfg)
        self.decoder = LatentDecoder(cfg)
        self.field = FieldMLP(cfg)

    def encode(self, cloud: torch.Tensor, sample: bool = False) -> torch.Tensor:
        mean, logvar = self.encoder(cloud)
        return mean + torch.randn_like(mean) * (0.5 * logvar).exp() if sample else mean

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent)

    def query(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.field(planes, points)

    def forward(self, cloud: torch.Tensor, points: torch.Tensor):
        mean, logvar = self.encoder(cloud)
        latent = mean + torch.randn_like(mean) * (0.5 * logvar).exp() if self.training else mean
        sdf, rgb = self.field(self.decoder(latent), points)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        return sdf, rgb, kl


def field_losses(sdf: torch.Tensor, rgb: torch.Tensor, sdf_gt: torch.Tensor, rgb_gt: torch.Tensor,
                 clamp: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The autoencoder's reconstruction terms at query points: (truncated SDF L1, colour MSE and
    colour L1 near the surface). MSE for colour: with L1 the colour head sat at the dataset
    median (grey) for thousands of steps; the squared error breaks that plateau within a few hundred."""
    sdf_loss = F.l1_loss(sdf.clamp(-clamp, clamp), sdf_gt.clamp(-clamp, clamp))
    near = (sdf_gt.abs() < 0.03).float().unsqueeze(-1)
    denom = (3 * near.sum()).clamp(min=1)
    return sdf_loss, (((rgb - rgb_gt) ** 2) * near).sum() / denom, ((rgb - rgb_gt).abs() * near).sum() / denom


def decoded_field_loss(ae: TriplaneAutoencoder, latent: torch.Tensor, points: torch.Tensor, sdf_gt: torch.Tensor,
                       rgb_gt: torch.Tensor) -> torch.Tensor:
    """Latents (B, 3, C, R, R) through the (frozen) decoder and field at points (B, M, 3), scored
    with the autoencoder's own reconstruction loss (truncated SDF L1 + near-surface colour MSE):
    the loss the images and edit trainings add on their predicted latents."""
    sdf, rgb = ae.query(ae.decode(latent), points)
    sdf_loss, rgb_mse, _ = field_losses(sdf, rgb, sdf_gt, rgb_gt, ae.cfg.sdf_clamp)
    return sdf_loss + rgb_mse
