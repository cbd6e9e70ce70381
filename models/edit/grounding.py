"""Where and to what colour: a text-conditioned part grounding network for colour edits
(recolours and patterns).

Why a second network: the edit DiT reads the latent in 4x4-texel patch tokens, a quarter of the
asset per axis, so a mug's handle lives inside one token; it recolours all or nothing (held-out
part recolours: 0 of 6 succeed) and its colour moves are weak ("i'd like it in red" turns a
blue mushroom 30% red). Colour is the one edit that needs no new geometry, so it can be
grounded where the asset is: per surface point, does the instruction address it, and which
colour does it ask for. Adding or removing a pattern is a colour edit too: the pattern's
points on the named part take the asked colour, or the part's own colour back. The source's
decoded triplane features at the point (the shared autoencoder's own planes, frozen) and a
global code of its latent are modulated (FiLM) by a learned summary of the instruction's
MiniLM tokens (the text model's `PromptHead`).

Outputs, all from the procedural world's exact edits:
  region   (B, N) logits: the point is what the instruction paints (a part, all of the asset,
           the points a pattern paints or painted on a part)
  part     (B, N) logits: the point lies on the part the instruction is about (all of the asset
           for a whole-asset edit); a removed pattern's points take the colour of the rest of it
  colour   (B, 3) the RGB the instruction asks for
  kind     (B, K) logits over GROUNDED_KINDS
Nothing maps words to parts or colours by hand: held-out words work only as far as the frozen
sentence encoder places them near training words.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..checkpoint import WEIGHTS_DIR, load_module
from ..text.prompt_head import PromptHead
from ..triplane.layers import sample_planes

GROUNDED_KINDS = ("recolour_all", "recolour_part", "other", "add_pattern", "remove_pattern")


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
        self.region = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 2))  # region, part logits
        self.heads = nn.Sequential(nn.Linear(s, s), nn.SiLU(), nn.Linear(s, 3 + len(GROUNDED_KINDS)))

    def read(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Instruction alone -> (summary (B, Q*W), colour (B, 3) in [0, 1], kind logits (B, K))."""
        summary = self.prompt(tokens, mask).flatten(1)
        out = self.heads(summary)
        return summary, torch.sigmoid(out[:, :3]), out[:, 3:]

    def forward(self, planes: torch.Tensor, latent: torch.Tensor, points: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor) -> "Grounding":
        """planes (B, 3, C, R, R) decoded from latent (B, 3, Cl, Rl, Rl); points (B, N, 3);
        instruction tokens (B, L, D) with mask (B, L) -> Grounding."""
        summary, colour, kind = self.read(tokens, mask)
        freqs = 2.0 ** torch.arange(self.cfg.fourier, device=points.device, dtype=points.dtype) * torch.pi
        ang = (points.unsqueeze(-1) * freqs).flatten(-2)
        h = self.point_in(torch.cat([sample_planes(planes, points), points, ang.sin(), ang.cos()], -1))
        code = self.shape_code(latent.flatten(1))
        film = self.film(torch.cat([summary, code], -1)).view(len(h), 1, self.cfg.blocks, 2, -1)
        for i, block in enumerate(self.blocks):
            h = block(h, film[:, :, i, 0], film[:, :, i, 1])
        out = self.region(h)
        return Grounding(out[..., 0], out[..., 1], colour, kind)


class Grounding(NamedTuple):
    region: torch.Tensor  # (B, N) logits
    part: torch.Tensor    # (B, N) logits
    colour: torch.Tensor  # (B, 3) in [0, 1]
    kind: torch.Tensor    # (B, len(GROUNDED_KINDS)) logits


DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "grounding.safetensors")


def load_grounding(path: str = DEFAULT_WEIGHTS, device="cpu") -> PartGrounding:
    return load_module(path, lambda config: PartGrounding(GroundingConfig(**config)), device,
                       f"grounding weights not found: {path} (python -m models.train grounding)")
