"""Whether an asset has the part an instruction names ("remove the spoiler" on a chair: no).

The part grounding network was only ever trained on instructions naming a part the asset has,
so asked for one it lacks it still marks something (on held-out chairs, "remove the spoiler"
marked 9% of the surface with mean probability 0.9, the same confidence as a real part): a
removal would cut a piece off. This small network reads the latent (the asset's shape and
colour code) and the instruction's pooled MiniLM embedding and says whether the named part is
there. Trained on the procedural world's part lists (`python -m models.train part_presence`),
evaluated on held-out assets and held-out templates (`python -m models.eval part_presence`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checkpoint import WEIGHTS_DIR, load_module

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "part_presence.safetensors")


@dataclass(frozen=True)
class PresenceConfig:
    latent_channels: int = 8
    latent_res: int = 16
    text_dim: int = 384
    width: int = 256
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class PartPresence(nn.Module):
    def __init__(self, cfg: PresenceConfig = PresenceConfig()):
        super().__init__()
        self.cfg = cfg
        c = cfg.latent_channels
        self.register_buffer("latent_mean", torch.zeros(1, 3, c, 1, 1))
        self.register_buffer("latent_std", torch.ones(1, 3, c, 1, 1))
        self.register_buffer("pooled_mean", torch.zeros(cfg.text_dim))
        self.register_buffer("pooled_std", torch.ones(cfg.text_dim))
        # the three planes side by side as channels: 16^2 -> 8^2 -> 4^2
        self.shape = nn.Sequential(nn.Conv2d(3 * c, 64, 3, stride=2, padding=1), nn.GELU(),
                                   nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(),
                                   nn.Linear(64 * (cfg.latent_res // 4) ** 2, cfg.width))
        self.text = nn.Linear(cfg.text_dim, cfg.width)
        self.head = nn.Sequential(nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.width, cfg.width), nn.GELU(),
                                  nn.Dropout(cfg.dropout), nn.Linear(cfg.width, 1))

    def forward(self, latent: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """latents (B, 3, C, R, R), raw pooled sentence embeddings (B, D) -> logits (B,) that the
        asset has the part the instruction names."""
        z = ((latent - self.latent_mean) / self.latent_std).flatten(1, 2)
        t = (pooled - self.pooled_mean) / self.pooled_std
        return self.head(torch.cat([self.shape(z), self.text(t)], -1))[:, 0]

    @torch.inference_mode()
    def probability(self, latent: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(latent, pooled))


def load_part_presence(path: str = DEFAULT_WEIGHTS, device="cpu") -> PartPresence:
    return load_module(path, lambda config: PartPresence(PresenceConfig(**config)), device,
                       f"part presence weights not found: {path} (python -m models.train part_presence)")
