"""LRM-style reconstructor: image patch tokens -> latent triplane, front view and optional back view.

- A small ViT encodes each prepared image (RGB on white + alpha) into patch tokens; one
  encoder for both views, told apart by a learned view embedding.
- Dual-side fusion (Tailor3D): the back image is mirrored left-right before encoding, so its
  columns line up with the front image's (both then run along +X), and its patch tokens share
  the front's 2D position embedding. The triplane tokens cross-attend to the front and back
  tokens together; without a back image its tokens are masked out, so the front alone works.
- Learnable triplane tokens (one per 4x4 patch of each latent plane, as in the DiT) go through
  self-attention, cross-attention to the image tokens and an MLP, and are unpatchified into
  the shared latent (3, C, R, R), normalised per (plane, channel) like the text model's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..text.dit import unpatchify


@dataclass(frozen=True)
class ReconstructorConfig:
    image_size: int = 64
    image_patch: int = 8
    in_channels: int = 4
    width: int = 192
    heads: int = 4
    encoder_depth: int = 3
    decoder_depth: int = 3
    latent_channels: int = 8
    latent_res: int = 16
    plane_patch: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.image_patch) ** 2

    @property
    def plane_tokens(self) -> int:
        return 3 * (self.latent_res // self.plane_patch) ** 2


def _mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))


class ImageEncoder(nn.Module):
    """ViT: patchify (conv), position + view embedding, pre-norm transformer."""

    def __init__(self, cfg: ReconstructorConfig):
        super().__init__()
        w = cfg.width
        self.patch = nn.Conv2d(cfg.in_channels, w, cfg.image_patch, stride=cfg.image_patch)
        self.pos = nn.Parameter(torch.randn(1, cfg.image_tokens, w) * 0.02)
        self.view = nn.Parameter(torch.randn(2, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 4 * w, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.encoder_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)

    def forward(self, images: torch.Tensor, view: int) -> torch.Tensor:
        """(B, 4, S, S) -> (B, T, W)."""
        x = self.patch(images).flatten(2).transpose(1, 2) + self.pos + self.view[view]
        return self.norm(self.blocks(x))


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = _mlp(width)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_pad: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        x = x + self.cross_attn(self.norm2(x), memory, memory, key_padding_mask=memory_pad, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


class TriplaneReconstructor(nn.Module):
    def __init__(self, cfg: ReconstructorConfig = ReconstructorConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.encoder = ImageEncoder(cfg)
        self.queries = nn.Parameter(torch.randn(1, cfg.plane_tokens, w) * 0.02)
        self.blocks = nn.ModuleList(DecoderBlock(w, cfg.heads) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, cfg.latent_channels * cfg.plane_patch ** 2)

    def forward(self, front: torch.Tensor, back: torch.Tensor | None = None,
                has_back: torch.Tensor | None = None) -> torch.Tensor:
        """front, back: (B, 4, S, S) prepared images (back as photographed: mirrored here);
        has_back (B,) bool masks the back per sample. -> normalised latent (B, 3, C, R, R)."""
        b = front.shape[0]
        memory = self.encoder(front, 0)
        pad = torch.zeros(b, memory.shape[1], dtype=torch.bool, device=front.device)
        if back is not None:
            present = torch.ones(b, dtype=torch.bool, device=front.device) if has_back is None else has_back
            back_tokens = memory.new_zeros(memory.shape)
            if present.any():  # only the backs that are there go through the encoder
                back_tokens[present] = self.encoder(torch.flip(back[present], dims=[-1]), 1)
            memory = torch.cat([memory, back_tokens], 1)
            pad = torch.cat([pad, ~present[:, None].expand(-1, back_tokens.shape[1])], 1)
        x = self.queries.expand(b, -1, -1)
        for block in self.blocks:
            x = block(x, memory, pad)
        cfg = self.cfg
        return unpatchify(self.head(self.norm(x)), cfg.latent_channels, cfg.latent_res, cfg.plane_patch)
