"""Where and to what colour: a text-conditioned part grounding network for recolour edits.

Why a second network: the edit DiT reads the latent in 4x4-texel patch tokens, a quarter of the
asset per axis, so a mug's handle lives inside one token; it recolours all or nothing (held-out
part recolours: 0 of 6 succeed) and its colour moves are weak ("i'd like it in red" turns a
blue mushroom 30% red). Colour is the one edit that needs no new geometry, so it can be
grounded where the asset is: per surface point, does the instruction address it, and which
colour does it ask for. The source's decoded triplane features at the point (the shared
autoencoder's own planes, frozen) and a global code of its latent are modulated (FiLM) by a
learned summary of the instruction's MiniLM tokens (the text model's `PromptHead`).

Outputs, all from the procedural world's exact recolours:
  region   (B, N) logits: the point lies on what the instruction recolours (a part, or all)
  colour   (B, 3) the RGB it asks for
  kind     (B, 3) logits over GROUNDED_KINDS: recolour all, recolour a part, anything else
Nothing maps words to parts or colours by hand: held-out words work only as far as the frozen
sentence encoder places them near training words.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checkpoint import WEIGHTS_DIR, load_module
from ..text.prompt_head import PromptHead
from ..triplane.layers import sample_planes

GROUNDED_KINDS = ("recolour_all", "recolour_part", "other")


@dataclass(frozen=True)
class GroundingConfig:
    text_dim: int = 384
    plane_channels: int = 32     # the autoencoder's decoded planes
    latent_numel: int = 3 * 8 * 16 * 16
    queries: int = 4             # instruction summary vectors
    summary_width: int = 128
    width: int = 128             # per-point hidden width
    blocks: int = 3              # FiLM-modulated residual blocks
    fourier: int = 4             # frequencies of the point's position encoding

    def to_dict(self) -> dict:
        return asdict(self)


class _FiLMBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False)
        self.linear = nn.Linear(width, width)

    def forward(self, h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return h + self.linear(nn.functional.silu(self.norm(h) * (1 + scale) + shift))


class PartGrounding(nn.Module):
    def __init__(self, cfg: GroundingConfig = GroundingConfig()):
        super().__init__()
        self.cfg = cfg
        w, s = cfg.width, cfg.queries * cfg.summary_width
        self.prompt = PromptHead(cfg.text_dim, cfg.queries, cfg.summary_width)
        self.shape_code = nn.Sequential(nn.LayerNorm(cfg.latent_numel, elementwise_affine=False),
                                        nn.Linear(cfg.latent_numel, w), nn.SiLU(), nn.Linear(w, w))
        self.point_in = nn.Sequential(nn.Linear(3 * cfg.plane_channels + 3 + 6 * cfg.fourier, w), nn.SiLU(),
                                      nn.Linear(w, w))
        self.film = nn.Sequential(nn.Linear(s + w, s), nn.SiLU(), nn.Linear(s, 2 * w * cfg.blocks))
        self.blocks = nn.ModuleList(_FiLMBlock(w) for _ in range(cfg.blocks))
        self.region = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 1))
        self.heads = nn.Sequential(nn.Linear(s, s), nn.SiLU(), nn.Linear(s, 3 + len(GROUNDED_KINDS)))

    def read(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Instruction alone -> (summary (B, Q*W), colour (B, 3) in [0, 1], kind logits (B, K))."""
        summary = self.prompt(tokens, mask).flatten(1)
        out = self.heads(summary)
        return summary, torch.sigmoid(out[:, :3]), out[:, 3:]

    def forward(self, planes: torch.Tensor, latent: torch.Tensor, points: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """planes (B, 3, C, R, R) decoded from latent (B, 3, Cl, Rl, Rl); points (B, N, 3);
        instruction tokens (B, L, D) with mask (B, L) -> region logits (B, N), colour, kind logits."""
        summary, colour, kind = self.read(tokens, mask)
        freqs = 2.0 ** torch.arange(self.cfg.fourier, device=points.device, dtype=points.dtype) * torch.pi
        ang = (points.unsqueeze(-1) * freqs).flatten(-2)
        h = self.point_in(torch.cat([sample_planes(planes, points), points, ang.sin(), ang.cos()], -1))
        code = self.shape_code(latent.flatten(1))
        film = self.film(torch.cat([summary, code], -1)).view(len(h), 1, self.cfg.blocks, 2, -1)
        for i, block in enumerate(self.blocks):
            h = block(h, film[:, :, i, 0], film[:, :, i, 1])
        return self.region(h)[..., 0], colour, kind


DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "grounding.safetensors")


def load_grounding(path: str = DEFAULT_WEIGHTS, device="cpu") -> PartGrounding:
    return load_module(path, lambda config: PartGrounding(GroundingConfig(**config)), device,
                       f"grounding weights not found: {path} (python -m models.train grounding)")
