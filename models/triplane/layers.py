"""Building blocks shared by the triplane encoder and decoder.

Plane layout (C, H, W): XY is (y, x), XZ is (z, x), YZ is (z, y), so that a point's
coordinates (u, v) for `grid_sample` are (x, y), (x, z) and (y, z).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # (u, v) coordinate indices of the XY, XZ, YZ planes


def project(points: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) -> (B, 3, N, 2) plane coordinates in [-1, 1]."""
    return torch.stack([points[..., list(ax)] for ax in PLANE_AXES], dim=1)


def sample_planes(planes: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """planes (B, 3, C, H, W), points (B, N, 3) -> features (B, N, 3C), bilinear."""
    b, _, c, h, w = planes.shape
    uv = project(points).reshape(b * 3, 1, -1, 2)
    feat = F.grid_sample(planes.reshape(b * 3, c, h, w), uv, mode="bilinear",
                         padding_mode="border", align_corners=False)  # (B*3, C, 1, N)
    return feat.reshape(b, 3, c, -1).permute(0, 3, 1, 2).reshape(b, -1, 3 * c)


def scatter_mean(points: torch.Tensor, feats: torch.Tensor, res: int) -> torch.Tensor:
    """Average point features into the cells of three planes: (B, N, 3), (B, N, C) -> (B, 3, C, res, res)."""
    b, n, c = feats.shape
    uv = project(points)  # (B, 3, N, 2)
    ij = ((uv.clamp(-1, 1 - 1e-6) + 1) * 0.5 * res).long()
    cell = ij[..., 1] * res + ij[..., 0]  # row = v, column = u
    index = (cell + torch.arange(b * 3, device=feats.device).view(b, 3, 1) * res * res).reshape(-1)
    src = feats.unsqueeze(1).expand(b, 3, n, c).reshape(-1, c)
    total = feats.new_zeros(b * 3 * res * res, c).index_add_(0, index, src)
    count = feats.new_zeros(b * 3 * res * res).index_add_(0, index, feats.new_ones(index.shape[0]))
    mean = total / count.clamp(min=1).unsqueeze(1)
    return mean.view(b, 3, res, res, c).permute(0, 1, 4, 2, 3).contiguous()


def cross_plane_context(planes: torch.Tensor) -> torch.Tensor:
    """Each plane receives the other two planes averaged along their shared-free axis
    (a cheap 3D-aware mixing, as in Rodin's roll-out convolution): (B, 3, C, R, R) -> (B, 3, 2C, R, R)."""
    xy, xz, yz = planes.unbind(1)  # (B, C, y, x), (B, C, z, x), (B, C, z, y)
    r = xy.shape[-1]
    x_from_xz = xz.mean(2, keepdim=True)                 # (B, C, 1, x)
    y_from_yz = yz.mean(2).unsqueeze(-1)                 # (B, C, y, 1)
    x_from_xy = xy.mean(2, keepdim=True)                 # (B, C, 1, x)
    z_from_yz = yz.mean(3, keepdim=True)                 # (B, C, z, 1)
    y_from_xy = xy.mean(3).unsqueeze(2)                  # (B, C, 1, y)
    z_from_xz = xz.mean(3, keepdim=True)                 # (B, C, z, 1)
    ctx_xy = torch.cat([x_from_xz.expand(-1, -1, r, -1), y_from_yz.expand(-1, -1, -1, r)], 1)
    ctx_xz = torch.cat([x_from_xy.expand(-1, -1, r, -1), z_from_yz.expand(-1, -1, -1, r)], 1)
    ctx_yz = torch.cat([y_from_xy.expand(-1, -1, r, -1), z_from_xz.expand(-1, -1, -1, r)], 1)
    return torch.stack([ctx_xy, ctx_xz, ctx_yz], 1)


class PlaneBlock(nn.Module):
    """Residual conv block applied to all three planes (shared weights + a plane embedding),
    with cross-plane context so the planes agree on one 3D shape."""

    def __init__(self, channels: int):
        super().__init__()
        self.plane_embed = nn.Parameter(torch.zeros(3, channels, 1, 1))
        self.mix = nn.Conv2d(3 * channels, channels, 1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, channels)
        self.norm2 = nn.GroupNorm(8, channels)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        b, _, c, h, w = planes.shape
        x = planes + self.plane_embed
        x = torch.cat([x, cross_plane_context(x)], 2).reshape(b * 3, 3 * c, h, w)
        x = self.mix(x)
        h1 = self.conv1(F.silu(self.norm1(x)))
        h1 = self.conv2(F.silu(self.norm2(h1)))
        return (x + h1).reshape(b, 3, c, h, w)


def per_plane(module: nn.Module, planes: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to each of the three planes: (B, 3, C, H, W) -> (B, 3, C', H', W')."""
    b = planes.shape[0]
    out = module(planes.flatten(0, 1))
    return out.view(b, 3, *out.shape[1:])
