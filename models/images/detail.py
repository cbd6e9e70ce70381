"""Detail network: sharpens the decoded triplane of an image reconstruction with the images.

The reconstructor predicts the shared 3 x 8 x 16 x 16 latent, and that latent's decoding
caps every image result: the autoencoder's own reconstruction of the true asset reaches IoU
0.75 on the held-out set (a thin leg is narrower than a latent texel). The field MLP is not
the limit: full 64^2 planes fitted per asset through the same frozen MLP reach 0.93-0.99
(models/cards/images.md). So this network predicts a residual on the *full* triplane
(3 x 32 x 64^2, the decoder's output, read by the same field MLP), the "full triplane decoded
by the same MLP" LRM-style models predict.

Inputs per plane: the decoded planes of the predicted latent, and the prepared images resampled
onto the XZ plane, the plane a Front view looks at: the image frame puts the object on the
ground (z = GROUND), centred on x = 0, largest side TARGET_EXTENT, and the preparation centred
its outline with its larger side filling the crop, so the outline's own box says where each
pixel lies on XZ (exact for a level orthographic view whose larger side is the asset's
largest). The back view, mirrored like the reconstructor mirrors it, goes onto the same plane.
The XY and YZ planes get the image through the blocks' cross-plane context. A small U-Net
(stem and head at 64^2, residual plane blocks at 32^2) predicts the residual; its last layer
starts at zero, so an untrained network returns the decoded planes unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..triplane.layers import PlaneBlock, per_plane
from ..world.asset import TARGET_EXTENT
from ..world.shapes import GROUND

IMAGE_FEATURES = 9  # front (premultiplied RGB, alpha), back (the same), back present


@dataclass(frozen=True)
class DetailConfig:
    plane_channels: int = 32     # the autoencoder's full triplane
    plane_res: int = 64
    hidden: int = 32             # channels at 64^2
    low_hidden: int = 64         # channels at 32^2
    low_blocks: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def image_on_xz(image: torch.Tensor, res: int) -> torch.Tensor:
    """Prepared images (B, 4, S, S) (RGB on white, alpha) -> (B, 4, res, res) premultiplied RGB and
    alpha laid out like the XZ plane (rows z from -1 up, columns x from -1), placed by the outline's
    box as the image frame places the asset (module docstring). No outline: zeros."""
    b, _, s, _ = image.shape
    alpha = image[:, 3]
    rows, cols = alpha.amax(2) > 0.5, alpha.amax(1) > 0.5          # (B, S) each
    idx = torch.arange(s, device=image.device, dtype=image.dtype)
    big = torch.tensor(float(s), device=image.device, dtype=image.dtype)

    def span(mask):
        lo = torch.where(mask, idx, big).amin(1)
        hi = torch.where(mask, idx + 1, -big).amax(1)
        return lo, hi

    top, bottom = span(rows)
    left, right = span(cols)
    found = rows.any(1)
    units_per_px = TARGET_EXTENT / torch.where(found, torch.maximum(bottom - top, right - left), big).clamp(min=1)
    centre = torch.linspace(-1 + 1 / res, 1 - 1 / res, res, device=image.device, dtype=image.dtype)
    col = (left + right)[:, None] / 2 + centre[None] / units_per_px[:, None]               # (B, res) along x
    row = bottom[:, None] - (centre[None] - GROUND) / units_per_px[:, None]               # (B, res) along z
    gx = (col / s * 2 - 1)[:, None, :].expand(b, res, res)
    gy = (row / s * 2 - 1)[:, :, None].expand(b, res, res)
    premultiplied = torch.cat([image[:, :3] * alpha[:, None], alpha[:, None]], 1)
    out = F.grid_sample(premultiplied, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out * found[:, None, None, None]


def image_planes(front: torch.Tensor, back: torch.Tensor | None, has_back: torch.Tensor | None,
                 res: int) -> torch.Tensor:
    """The images as triplane features (B, 3, IMAGE_FEATURES, res, res): on XZ only."""
    b = front.shape[0]
    xz = [image_on_xz(front, res)]
    if back is None:
        xz += [front.new_zeros(b, 5, res, res)]
    else:
        present = torch.ones(b, dtype=torch.bool, device=front.device) if has_back is None else has_back
        mask = present.to(front.dtype)[:, None, None, None]
        xz += [image_on_xz(torch.flip(back, dims=[-1]), res) * mask, mask.expand(b, 1, res, res)]
    xz = torch.cat(xz, 1)
    zeros = torch.zeros_like(xz)
    return torch.stack([zeros, xz, zeros], 1)


class PlaneDetailNet(nn.Module):
    def __init__(self, cfg: DetailConfig = DetailConfig()):
        super().__init__()
        self.cfg = cfg
        h, lh = cfg.hidden, cfg.low_hidden
        self.stem = nn.Conv2d(cfg.plane_channels + IMAGE_FEATURES, h, 3, padding=1)
        self.plane_embed = nn.Parameter(torch.zeros(3, h, 1, 1))
        self.down = nn.Conv2d(h, lh, 3, stride=2, padding=1)
        self.blocks = nn.Sequential(*(PlaneBlock(lh) for _ in range(cfg.low_blocks)))
        self.up = nn.Conv2d(lh, h, 3, padding=1)
        self.head = nn.Sequential(nn.GroupNorm(8, h), nn.SiLU(), nn.Conv2d(h, cfg.plane_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, planes: torch.Tensor, front: torch.Tensor, back: torch.Tensor | None = None,
                has_back: torch.Tensor | None = None) -> torch.Tensor:
        """planes (B, 3, C, R, R) decoded from the predicted latent; front, back (B, 4, S, S) prepared
        images (back as photographed); has_back (B,) bool -> sharpened planes, same shape."""
        x = torch.cat([planes, image_planes(front, back, has_back, planes.shape[-1])], 2)
        skip = per_plane(self.stem, x) + self.plane_embed
        low = self.blocks(per_plane(lambda t: self.down(F.silu(t)), skip))
        x = skip + per_plane(lambda t: self.up(F.interpolate(t, scale_factor=2.0, mode="nearest")), low)
        return planes + per_plane(self.head, x)
