from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class AutoencoderConfig:
    point_dim: int = 6           # xyz + rgb
    point_features: int = 64
    scatter_res: int = 32        # encoder plane resolution the points are pooled into
    latent_res: int = 16
    latent_channels: int = 8     # compact latent: 3 x 8 x 16 x 16 = 6144 numbers
    hidden_channels: int = 64
    plane_res: int = 64          # full triplane resolution
    plane_channels: int = 32
    mlp_hidden: int = 64
    sdf_clamp: float = 0.1       # truncation of the SDF loss (asset units)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (3, self.latent_channels, self.latent_res, self.latent_res)
