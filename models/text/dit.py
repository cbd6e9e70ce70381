"""A small DiT over latent-triplane patch tokens (rectified-flow velocity predictor).

Tokens: each of the three latent planes (C, R, R) is cut into p x p patches, giving
3 * (R/p)^2 tokens with a learned position + plane embedding. Conditioning: adaLN-Zero
from (flow time, pooled sentence embedding) and cross-attention to the sentence's token
features (masked), as in DiT / PixArt.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .prompt_head import AttributeProbe, PromptHead


@dataclass(frozen=True)
class DiTConfig:
    latent_channels: int = 8
    latent_res: int = 16
    patch: int = 4
    width: int = 192
    depth: int = 6
    heads: int = 4
    text_dim: int = 384
    extra_cond_tokens: int = 0   # e.g. source-latent tokens for editing (concatenated to the sequence)
    summary_queries: int = 0     # > 0: a learned prompt summary (PromptHead) conditions adaLN and cross-attention
    summary_width: int = 256
    attend_raw_tokens: bool = True  # cross-attend the encoder's token features too (besides the summary)
    attribute_classes: tuple = ()   # output sizes of the summary's training read-out (AttributeProbe)
    attribute_multi_hot: tuple = ()  # which of those heads are multi-hot sets (sigmoids), not classes
    attribute_condition: bool = False  # the read-out's probabilities also condition adaLN (see context())
    change_gate: bool = False    # also predict, per latent texel, the logit that it changes (editing)

    def __post_init__(self):
        for name in ("attribute_classes", "attribute_multi_hot"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def tokens_per_plane(self) -> int:
        return (self.latent_res // self.patch) ** 2

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch * self.patch

    @property
    def out_channels(self) -> int:
        return self.latent_channels + int(self.change_gate)


def patchify(latent: torch.Tensor, p: int) -> torch.Tensor:
    """(B, 3, C, R, R) -> (B, 3 * (R/p)^2, C * p * p)."""
    b, n, c, r, _ = latent.shape
    x = latent.reshape(b, n, c, r // p, p, r // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(b, n * (r // p) ** 2, c * p * p)


def unpatchify(tokens: torch.Tensor, c: int, r: int, p: int) -> torch.Tensor:
    b = tokens.shape[0]
    g = r // p
    x = tokens.reshape(b, 3, g, g, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, 3, c, r, r)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = (t.float()[:, None] * 1000.0) * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm_x = nn.LayerNorm(width, eps=1e-6)
        self.q_x = nn.Linear(width, width)
        self.kv_x = nn.Linear(width, 2 * width)
        self.proj_x = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"), nn.Linear(4 * width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, w = x.shape
        return x.view(b, n, self.heads, w // self.heads).transpose(1, 2)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, h, n, d = x.shape
        return x.transpose(1, 2).reshape(b, n, h * d)

    def forward(self, x, cond, ctx, ctx_mask):
        s1, g1, a1, s2, g2, a2 = self.ada(cond).chunk(6, dim=-1)
        q, k, v = [self._heads(t) for t in self.qkv(modulate(self.norm1(x), s1, g1)).chunk(3, dim=-1)]
        x = x + a1[:, None] * self.proj(self._merge(F.scaled_dot_product_attention(q, k, v)))
        qx = self._heads(self.q_x(self.norm_x(x)))
        kx, vx = [self._heads(t) for t in self.kv_x(ctx).chunk(2, dim=-1)]
        attn_mask = ctx_mask[:, None, None, :]
        x = x + self.proj_x(self._merge(F.scaled_dot_product_attention(qx, kx, vx, attn_mask=attn_mask)))
        return x + a2[:, None] * self.mlp(modulate(self.norm2(x), s2, g2))


class LatentDiT(nn.Module):
    def __init__(self, cfg: DiTConfig = DiTConfig()):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        n_tokens = 3 * cfg.tokens_per_plane
        self.embed = nn.Linear(cfg.token_dim, w)
        self.pos = nn.Parameter(torch.randn(1, n_tokens, w) * 0.02)
        if cfg.extra_cond_tokens:
            self.cond_embed = nn.Linear(cfg.token_dim, w)
        self.t_embed = nn.Sequential(nn.Linear(256, w), nn.SiLU(), nn.Linear(w, w))
        self.text_pool = nn.Linear(cfg.text_dim, w)
        self.text_tokens = nn.Linear(cfg.text_dim, w)
        self.null_pool = nn.Parameter(torch.zeros(cfg.text_dim))
        self.null_tokens = nn.Parameter(torch.zeros(1, cfg.text_dim))
        if cfg.summary_queries:
            self.prompt_head = PromptHead(cfg.text_dim, cfg.summary_queries, cfg.summary_width)
            self.summary_pool = nn.Linear(cfg.summary_queries * cfg.summary_width, w)
            self.summary_tokens = nn.Linear(cfg.summary_width, w)
            if cfg.attribute_classes:
                self.prompt_probe = AttributeProbe(cfg.summary_queries * cfg.summary_width, cfg.attribute_classes,
                                                   cfg.attribute_multi_hot)
            if cfg.attribute_condition:
                self.attribute_embed = nn.Linear(sum(cfg.attribute_classes), w)
        self.blocks = nn.ModuleList(Block(w, cfg.heads) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(w, 2 * w))
        self.out = nn.Linear(w, cfg.out_channels * cfg.patch * cfg.patch)
        for m in (self.final_ada[1], self.out):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def null_condition(self, batch: int, length: int):
        """The 'no prompt' condition used for classifier-free guidance."""
        pooled = self.null_pool[None].expand(batch, -1)
        tokens = self.null_tokens[None].expand(batch, length, -1)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=pooled.device)
        mask[:, 0] = True
        return pooled, tokens, mask

    def context(self, pooled, tokens, mask) -> tuple:
        """The text condition as (adaLN vector (B, W), cross-attention tokens, their mask)."""
        cond = self.text_pool(pooled)
        ctx = self.text_tokens(tokens)
        if not self.cfg.summary_queries:
            return cond, ctx, mask
        summary = self.prompt_head(tokens, mask)
        cond = cond + self.summary_pool(summary.flatten(1))
        if self.cfg.attribute_condition:
            # what the read-out says the prompt describes (category, colours, sizes) as probabilities:
            # a low-dimensional condition that a paraphrase moves only as far as it moves the
            # read-out, where the summary's other directions drift freely off the training captions.
            # No gradient: the read-out is trained on its attribute targets alone.
            with torch.no_grad():
                attributes = self.prompt_probe.probabilities(summary)
            cond = cond + self.attribute_embed(attributes)
        s_ctx = self.summary_tokens(summary)
        s_mask = torch.ones(summary.shape[:2], dtype=torch.bool, device=mask.device)
        if not self.cfg.attend_raw_tokens:
            return cond, s_ctx, s_mask
        return cond, torch.cat([s_ctx, ctx], 1), torch.cat([s_mask, mask], 1)

    def forward(self, x_t, t, pooled, tokens, mask, source: torch.Tensor | None = None, with_gate: bool = False):
        """x_t (B, 3, C, R, R), t (B,), pooled (B, 384), tokens (B, L, 384), mask (B, L) -> velocity
        (B, 3, C, R, R); with_gate (cfg.change_gate): (velocity, change logits (B, 3, R, R))."""
        cfg = self.cfg
        h = self.embed(patchify(x_t, cfg.patch)) + self.pos
        if source is not None:
            h = h + self.cond_embed(patchify(source, cfg.patch))
        text, ctx, mask = self.context(pooled, tokens, mask)
        cond = self.t_embed(timestep_embedding(t, 256)) + text
        for block in self.blocks:
            h = block(h, cond, ctx, mask)
        shift, scale = self.final_ada(cond).chunk(2, dim=-1)
        out = self.out(modulate(self.final_norm(h), shift, scale))
        out = unpatchify(out, cfg.out_channels, cfg.latent_res, cfg.patch)
        velocity = out[:, :, :cfg.latent_channels]
        if with_gate:
            return velocity, out[:, :, cfg.latent_channels]
        return velocity
