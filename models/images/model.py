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


class ImagePlanes(nn.Module):
    """Version 2: image tokens -> a triplane *code* wider than the shared latent -> this model's own
    decoder -> full feature planes (3, Cp, 64, 64), read by the shared autoencoder's field MLP.

    Any model that predicts the 3 x 8 x 16^2 latent is capped by what the autoencoder can show
    through it (its reconstruction of the true surface scores 0.75 IoU in the image frame, full
    planes fitted to the same field MLP 0.98). Here the code has `code_channels` channels (the
    first `latent_channels` are the latent, normalised per (plane, channel) by the buffers
    below; the others start at zero weight) and the decoder, a copy of the autoencoder's, is
    trained with the reconstructor on the decoded field. `from_latent_model` builds it from a
    latent reconstructor so that it starts exactly where that one is. Its state dict is the
    weights bundle: `net.*`, `decoder.*`, `latent_mean`, `latent_std`."""

    def __init__(self, cfg: ReconstructorConfig, decoder_cfg):
        super().__init__()
        from ..triplane.autoencoder import LatentDecoder

        self.decoder_cfg = decoder_cfg
        self.net = TriplaneReconstructor(cfg)
        self.decoder = LatentDecoder(decoder_cfg)
        self.register_buffer("latent_mean", torch.zeros(3, cfg.latent_channels, 1, 1))
        self.register_buffer("latent_std", torch.ones(3, cfg.latent_channels, 1, 1))

    def code(self, front: torch.Tensor, back: torch.Tensor | None = None,
             has_back: torch.Tensor | None = None) -> torch.Tensor:
        """Prepared images -> the triplane code (B, 3, C, R, R) the decoder reads."""
        return self.net(front, back, has_back) * self.latent_std + self.latent_mean

    def forward(self, front: torch.Tensor, back: torch.Tensor | None = None,
                has_back: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.code(front, back, has_back))

    @classmethod
    def from_latent_model(cls, net: TriplaneReconstructor, latent_mean: torch.Tensor, latent_std: torch.Tensor,
                          autoencoder, code_channels: int) -> "ImagePlanes":
        """A planes model whose output equals `autoencoder.decode` of the latent model's: the
        latent channels' weights copied, the extra channels' head rows small and their decoder
        inputs zero (so they start silent and learn what the latent could not carry)."""
        from dataclasses import replace

        c_lat = net.cfg.latent_channels
        cfg = replace(net.cfg, latent_channels=code_channels)
        model = cls(cfg, replace(autoencoder.cfg, latent_channels=code_channels))
        p2 = cfg.plane_patch ** 2
        with torch.no_grad():
            own = {k: v for k, v in net.state_dict().items() if not k.startswith("head.")}
            model.net.load_state_dict(own, strict=False)
            # head rows run (channel, patch row, patch column): the first c_lat * p2 are the latent's
            model.net.head.weight.mul_(0.1)
            model.net.head.bias.zero_()
            model.net.head.weight[: c_lat * p2] = net.head.weight
            model.net.head.bias[: c_lat * p2] = net.head.bias
            model.decoder.load_state_dict({k: v for k, v in autoencoder.decoder.state_dict().items()
                                           if not k.startswith("stem.weight")}, strict=False)
            model.decoder.stem.weight.zero_()
            model.decoder.stem.weight[:, :c_lat] = autoencoder.decoder.stem.weight
            model.latent_mean[:, :c_lat] = latent_mean
            model.latent_std[:, :c_lat] = latent_std
        return model
