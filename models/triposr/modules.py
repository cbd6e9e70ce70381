"""TripoSR's building blocks with TripoSR's parameter names (so `model.ckpt` loads strictly).

Only inference is implemented: no dropout at eval, no gradient checkpointing, no attention masks
(TripoSR's forward uses none)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- image tokenizer


class DINOSingleImageTokenizer(nn.Module):
    """A DINO ViT (transformers' ViTModel, pooler included as in TripoSR) -> patch tokens (B, Ct, Nt)."""

    def __init__(self, vit_config):
        super().__init__()
        from transformers import ViTModel

        self.model = ViTModel(vit_config)
        self.register_buffer("image_mean", torch.as_tensor([0.485, 0.456, 0.406]).reshape(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.as_tensor([0.229, 0.224, 0.225]).reshape(1, 1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, N, 3, H, W) in [0, 1] -> (B, N, Ct, Nt)."""
        b, n = images.shape[:2]
        x = ((images - self.image_mean) / self.image_std).reshape(b * n, *images.shape[2:])
        out = self.model(pixel_values=x, interpolate_pos_encoding=True)
        local = out.last_hidden_state.permute(0, 2, 1)
        return local.reshape(b, n, *local.shape[1:])


# ---------------------------------------------------------------- triplane tokens


class Triplane1DTokenizer(nn.Module):
    def __init__(self, plane_size: int, num_channels: int):
        super().__init__()
        self.plane_size, self.num_channels = plane_size, num_channels
        self.embeddings = nn.Parameter(
            torch.randn(3, num_channels, plane_size, plane_size) / math.sqrt(num_channels))

    def forward(self, batch_size: int) -> torch.Tensor:
        """-> (B, Ct, 3 * P * P)."""
        return self.embeddings.reshape(1, 3, self.num_channels, -1).permute(0, 2, 1, 3).reshape(
            1, self.num_channels, -1).expand(batch_size, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, Ct, 3 * P * P) -> (B, 3, Ct, P, P)."""
        b, ct, nt = tokens.shape
        p = self.plane_size
        if nt != 3 * p * p or ct != self.num_channels:
            raise ValueError(f"tokens {tuple(tokens.shape)} do not fit planes of {ct}x{p}x{p}")
        return tokens.reshape(b, ct, 3, p, p).permute(0, 2, 1, 3, 4)


# ---------------------------------------------------------------- transformer backbone


class Attention(nn.Module):
    def __init__(self, query_dim: int, cross_attention_dim: int | None = None, heads: int = 8,
                 dim_head: int = 64, bias: bool = False, out_bias: bool = True):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        kv_dim = cross_attention_dim if cross_attention_dim is not None else query_dim
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim, inner, bias=bias)
        self.to_v = nn.Linear(kv_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim, bias=out_bias), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b = x.shape[0]
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.reshape(b, -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(1, 2).reshape(b, -1, q.shape[1] * q.shape[-1]).to(q.dtype)
        return self.to_out[1](self.to_out[0](h))


class GELU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, approximate: str = "none"):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(self.proj(x), approximate=self.approximate)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class ApproximateGELU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        x = self.proj(x)
        return x * torch.sigmoid(1.702 * x)


_ACTIVATIONS = {
    "gelu": lambda i, o: GELU(i, o), "gelu-approximate": lambda i, o: GELU(i, o, "tanh"),
    "geglu": GEGLU, "geglu-approximate": ApproximateGELU,
}


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, activation_fn: str = "geglu"):
        super().__init__()
        if activation_fn not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation_fn {activation_fn!r}")
        inner = int(dim * mult)
        self.net = nn.ModuleList([_ACTIVATIONS[activation_fn](dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim)])

    def forward(self, x):
        for m in self.net:
            x = m(x)
        return x


class BasicTransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the image tokens, feed-forward (TripoSR's block)."""

    def __init__(self, dim: int, heads: int, dim_head: int, cross_attention_dim: int | None = None,
                 activation_fn: str = "geglu", attention_bias: bool = False, double_self_attention: bool = False,
                 norm_elementwise_affine: bool = True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
        self.attn1 = Attention(dim, None, heads, dim_head, attention_bias)
        if cross_attention_dim is not None or double_self_attention:
            self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
            self.attn2 = Attention(dim, None if double_self_attention else cross_attention_dim, heads, dim_head,
                                   attention_bias)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine)
        self.ff = FeedForward(dim, activation_fn=activation_fn)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        if self.attn2 is not None:
            x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer1D(nn.Module):
    """GroupNorm -> proj_in -> blocks -> proj_out, residual around all of it; tokens are (B, C, N)."""

    def __init__(self, in_channels: int, num_attention_heads: int = 16, attention_head_dim: int = 88,
                 num_layers: int = 1, norm_num_groups: int = 32, cross_attention_dim: int | None = None,
                 attention_bias: bool = False, activation_fn: str = "geglu", double_self_attention: bool = False,
                 norm_elementwise_affine: bool = True):
        super().__init__()
        inner = num_attention_heads * attention_head_dim
        self.norm = nn.GroupNorm(norm_num_groups, in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(in_channels, inner)
        self.transformer_blocks = nn.ModuleList([
            BasicTransformerBlock(inner, num_attention_heads, attention_head_dim, cross_attention_dim, activation_fn,
                                  attention_bias, double_self_attention, norm_elementwise_affine)
            for _ in range(num_layers)])
        self.proj_out = nn.Linear(inner, in_channels)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                cancel=None) -> torch.Tensor:
        residual = hidden_states
        h = self.proj_in(self.norm(hidden_states).permute(0, 2, 1))
        for block in self.transformer_blocks:
            if cancel is not None and cancel():
                from ..mesh import Cancelled

                raise Cancelled()
            h = block(h, encoder_hidden_states)
        return self.proj_out(h).permute(0, 2, 1) + residual


# ---------------------------------------------------------------- post-processor and decoder


class TriplaneUpsampleNetwork(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, triplanes: torch.Tensor) -> torch.Tensor:
        """(B, 3, Ci, P, P) -> (B, 3, Co, 2P, 2P)."""
        b = triplanes.shape[0]
        up = self.upsample(triplanes.reshape(b * 3, *triplanes.shape[2:]))
        return up.reshape(b, 3, *up.shape[1:])


class NeRFMLP(nn.Module):
    """Concatenated triplane features -> density (1) + colour features (3)."""

    def __init__(self, in_channels: int, n_neurons: int, n_hidden_layers: int, activation: str = "relu",
                 bias: bool = True):
        super().__init__()
        act = {"relu": nn.ReLU, "silu": nn.SiLU}.get(activation)
        if act is None:
            raise ValueError(f"unsupported NeRF MLP activation {activation!r}")
        layers = [nn.Linear(in_channels, n_neurons, bias=bias), act()]
        for _ in range(n_hidden_layers - 1):
            layers += [nn.Linear(n_neurons, n_neurons, bias=bias), act()]
        layers.append(nn.Linear(n_neurons, 4, bias=bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict:
        out = self.layers(x)
        return {"density": out[..., 0:1], "features": out[..., 1:4]}


_FIELD_ACTIVATIONS = {
    "exp": torch.exp, "trunc_exp": torch.exp,  # trunc_exp only differs in its backward pass
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus, "relu": F.relu, "none": lambda x: x,
}


class TriplaneNeRFRenderer(nn.Module):
    """Holds no weights; queries the triplane at points in [-radius, radius]^3 (TripoSR's frame)."""

    def __init__(self, radius: float, feature_reduction: str = "concat", density_activation: str = "trunc_exp",
                 density_bias: float = -1.0, color_activation: str = "sigmoid", num_samples_per_ray: int = 128,
                 randomized: bool = False):
        super().__init__()
        if feature_reduction not in ("concat", "mean"):
            raise ValueError(f"unsupported feature_reduction {feature_reduction!r}")
        for name in (density_activation, color_activation):
            if name.lower() not in _FIELD_ACTIVATIONS:
                raise ValueError(f"unsupported activation {name!r}")
        self.radius = float(radius)
        self.feature_reduction = feature_reduction
        self.density_activation = _FIELD_ACTIVATIONS[density_activation.lower()]
        self.color_activation = _FIELD_ACTIVATIONS[color_activation.lower()]
        self.density_bias = float(density_bias)

    def query_triplane(self, decoder: NeRFMLP, positions: torch.Tensor, triplane: torch.Tensor) -> dict:
        """positions (N, 3) in [-radius, radius]; triplane (3, C, H, W) -> density_act (N,), color (N, 3)."""
        x = positions / self.radius
        # plane 0: (x, y), plane 1: (x, z), plane 2: (y, z); grid_sample's (u, v) index (width, height)
        idx = torch.stack((x[:, [0, 1]], x[:, [0, 2]], x[:, [1, 2]]), dim=0)[:, None]  # (3, 1, N, 2)
        feats = F.grid_sample(triplane, idx.to(triplane.dtype), align_corners=False, mode="bilinear")  # (3, C, 1, N)
        if self.feature_reduction == "concat":
            feats = feats[:, :, 0].permute(2, 0, 1).reshape(x.shape[0], -1)
        else:
            feats = feats[:, :, 0].mean(0).t()
        out = decoder(feats)
        return {"density_act": self.density_activation(out["density"][:, 0] + self.density_bias),
                "color": self.color_activation(out["features"])}
