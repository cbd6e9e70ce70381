"""Offline stand-ins for published checkpoints (used by tests/test_adapters.py and bench/compare.py).

Nothing here is downloaded: configurations are built in code, tokenizers from a byte-level
alphabet, weights randomly initialised. `shape_*` helpers then overwrite a few weights so that the
models produce a known shape (an ellipsoid, tall along the source frame's up axis), which lets a
test check axes and colours through the adapters' real loading and meshing code; the amount of
computation does not change (the same dense layers run).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
import yaml

# ------------------------------------------------------------------ Shap-E

# published configurations (huggingface.co/openai/shap-e and openai/shap-e-img2img, diffusers layout)
SHAP_E_PRIOR = dict(num_attention_heads=16, attention_head_dim=64, num_layers=24, embedding_dim=1024,
                    num_embeddings=1024, additional_embeddings=0, time_embed_act_fn="gelu", time_embed_dim=4096,
                    clip_embed_dim=2048, embedding_proj_dim=768, embedding_proj_norm_type=None,
                    encoder_hid_proj_type=None, norm_in_type="layer", added_emb_type=None, dropout=0.0)
SHAP_E_IMG_PRIOR = {**SHAP_E_PRIOR, "num_attention_heads": 8, "attention_head_dim": 128, "embedding_proj_dim": 1024,
                    "embedding_proj_norm_type": "layer"}
SHAP_E_SCHEDULER = dict(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                        use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
# CLIP ViT-L/14 text tower with projection (openai/shap-e text_encoder)
CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                     num_hidden_layers=12, projection_dim=768, max_position_embeddings=77, hidden_act="quick_gelu")


def clip_tokenizer(max_length: int = 77):
    """A CLIP tokenizer with a byte-level vocabulary and no merges (every character is a token)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_shap_e(mode: str = "text"):
    """A tiny ShapEPipeline (text) or ShapEImg2ImgPipeline (images), randomly initialised."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline, ShapEPipeline
    from diffusers.pipelines.shap_e import ShapERenderer

    torch.manual_seed(0)
    prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=32, num_embeddings=32,
                             embedding_proj_dim=32, time_embed_dim=128, num_layers=1, clip_embed_dim=64,
                             additional_embeddings=0, time_embed_act_fn="gelu", norm_in_type="layer",
                             embedding_proj_norm_type="layer" if mode == "images" else None,
                             encoder_hid_proj_type=None, added_emb_type=None)
    renderer = ShapERenderer(param_shapes=((8, 93), (8, 8), (8, 8), (8, 8)), d_latent=32, d_hidden=8, n_output=12,
                             background=(0.1, 0.1, 0.1))
    scheduler = HeunDiscreteScheduler(**SHAP_E_SCHEDULER)
    if mode == "text":
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        tok = clip_tokenizer(16)
        enc = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1,
            projection_dim=32, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        return ShapEPipeline(prior=prior, text_encoder=enc, tokenizer=tok, scheduler=scheduler,
                             shap_e_renderer=renderer)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    enc = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, image_size=32, patch_size=8, intermediate_size=37,
                                           num_attention_heads=4, num_hidden_layers=1, projection_dim=32))
    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return ShapEImg2ImgPipeline(prior=prior, image_encoder=enc, image_processor=proc, scheduler=scheduler,
                                shap_e_renderer=renderer)


def real_size_shap_e():
    """Shap-E text -> 3D at its published size (prior 24 x 1024, CLIP ViT-L/14 text tower, renderer
    defaults), randomly initialised; the tokenizer is byte-level (the prompt is padded to 77 anyway)."""
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEPipeline
    from diffusers.pipelines.shap_e import ShapERenderer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    return ShapEPipeline(prior=PriorTransformer(**SHAP_E_PRIOR),
                         text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L14_TEXT)),
                         tokenizer=clip_tokenizer(77), scheduler=HeunDiscreteScheduler(**SHAP_E_SCHEDULER),
                         shap_e_renderer=ShapERenderer())


# Shap-E's renderer MLP input: [x, y, z, sin(2^k x_i) (45), cos(2^k x_i) (45)]; cos(x), cos(y), cos(z) at 48..50
_COS_XYZ = (48, 49, 50)


@torch.no_grad()
def shape_shap_e_renderer(renderer, weights=(1.0, 1.0, 0.25), level: float = 2.16, rgb_logits=(3.0, -3.0, -3.0)):
    """Make the renderer's SDF sum_i w_i cos(x_i) - level (an ellipsoid, half-axes about
    sqrt(2 (sum w - level) / w_i): 0.42, 0.42, 0.85 by default, tall along Shap-E's +Z) whatever the latent:
    the latent -> MLP-weight projections get zero weights and constant biases, and a large offset
    keeps every SiLU in its linear range. Colour: sigmoid(rgb_logits) (red by default)."""
    sd = renderer.state_dict()
    k_off = 20.0
    names = renderer.config.param_names
    for i, name in enumerate(names):
        key = "params_proj.projections." + name.replace(".", "__")
        sd[key + ".proj.weight"].zero_()
        sd[key + ".norm.bias"].zero_()
        rows, cols = renderer.config.param_shapes[i]
        w = torch.zeros(rows, cols)
        if i == 0:
            for idx, wi in zip(_COS_XYZ, weights):
                w[0, idx] = wi
        else:
            w[0, 0] = 1.0
        sd[key + ".proj.bias"].copy_(w.reshape(-1))
    fixed = [int(k.split(".")[2]) for k in sd if k.startswith("mlp.mlp.") and k.endswith(".weight")]
    for i in fixed:
        sd[f"mlp.mlp.{i}.bias"].zero_()
        if f"nerstf.mlp.{i}.weight" not in names:
            sd[f"mlp.mlp.{i}.weight"].zero_()
            sd[f"mlp.mlp.{i}.weight"][0, 0] = 1.0
    last = max(fixed)
    sd["mlp.mlp.0.bias"][0] = k_off
    sd[f"mlp.mlp.{last}.bias"][0] = -k_off - level
    sd[f"mlp.mlp.{last}.bias"][3:6] = torch.tensor(rgb_logits)
    renderer.load_state_dict(sd)


# ------------------------------------------------------------------ TripoSR

# stabilityai/TripoSR config.yaml (published with the checkpoint)
TRIPOSR_CONFIG = {
    "cond_image_size": 512,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": "facebook/dino-vitb16"},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 32, "num_channels": 1024},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 16, "attention_head_dim": 64,
                 "num_layers": 16, "cross_attention_dim": 768},
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 1024, "out_channels": 40},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {"radius": 0.87, "feature_reduction": "concat", "density_activation": "exp", "density_bias": -1.0,
                 "num_samples_per_ray": 128},
}


def tiny_triposr_config(vit_folder: str = "dino") -> dict:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TRIPOSR_CONFIG.items()}
    cfg["cond_image_size"] = 32
    cfg["image_tokenizer"] = {"pretrained_model_name_or_path": vit_folder}
    cfg["tokenizer"] = {"plane_size": 16, "num_channels": 16}
    cfg["backbone"] = {"in_channels": "${tokenizer.num_channels}", "num_attention_heads": 2, "attention_head_dim": 8,
                       "num_layers": 1, "cross_attention_dim": 32, "norm_num_groups": 4}
    cfg["post_processor"] = {"in_channels": "${tokenizer.num_channels}", "out_channels": 4}
    cfg["decoder"] = {"in_channels": 12, "n_neurons": 8, "n_hidden_layers": 2, "activation": "silu"}
    return cfg


def write_tiny_triposr(folder: str, shaped: bool = True) -> str:
    """config.yaml + a local DINO config + model.ckpt (torch.save of a state dict) in `folder`."""
    from transformers import ViTConfig

    from models.triposr.loading import build_model, load_config

    os.makedirs(folder, exist_ok=True)
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
              patch_size=16).save_pretrained(os.path.join(folder, "dino"))
    with open(os.path.join(folder, "config.yaml"), "w", encoding="utf-8") as fh:
        yaml.safe_dump(tiny_triposr_config(), fh, sort_keys=False)
    torch.manual_seed(0)
    model = build_model(load_config(os.path.join(folder, "config.yaml")), folder)
    if shaped:
        shape_triposr(model)
    torch.save(model.state_dict(), os.path.join(folder, "model.ckpt"))
    return folder


@torch.no_grad()
def shape_triposr(model, half_axes=(0.45, 0.6, 0.9), tilt: float = 2.0, rgb_logits=(2.0, -2.0, 2.0),
                  threshold: float = 25.0):
    """Make a TripoSR model's density an ellipsoid in its normalised coordinates (u = x / radius), half-axes
    `half_axes` along its x (toward the camera), y (image right), z (up), with the top leaning toward +x
    (toward the camera) by `tilt`, whatever the image: the backbone's output projection is zeroed (its
    residual passes the learnable triplane tokens through), the upsampler copies channel 0, the tokens'
    channel 0 hold one quadratic per plane, and the NeRF MLP sums the three planes' channel 0."""
    ax, ay, az = half_axes
    offset, scale = 8.0, 2.0          # keeps every plane term >= 0; density slope
    k_off = 20.0                      # keeps SiLU linear
    model.backbone.proj_out.weight.zero_()
    model.backbone.proj_out.bias.zero_()
    up = model.post_processor.upsample
    up.weight.zero_()
    up.weight[0, 0] = 1.0
    up.bias.zero_()
    emb = model.tokenizer.embeddings
    p = emb.shape[-1]
    u = (2 * torch.arange(p, dtype=torch.float32) + 1) / p - 1    # pixel centres (align_corners=False)
    rows, cols = torch.meshgrid(u, u, indexing="ij")               # plane (a, b): a -> columns, b -> rows
    emb.zero_()
    emb[0, 0] = offset - (cols / ax) ** 2                          # (x, y) plane carries the x^2 term
    emb[1, 0] = offset - (rows / az) ** 2 + tilt * cols * rows     # (x, z): z^2 and the x*z tilt
    emb[2, 0] = offset - (cols / ay) ** 2                          # (y, z): y^2
    linears = [m for m in model.decoder.layers if isinstance(m, torch.nn.Linear)]
    n_feat = linears[0].in_features // 3
    for lin in linears:
        lin.weight.zero_()
        lin.bias.zero_()
    linears[0].weight[0, [0, n_feat, 2 * n_feat]] = 1.0
    linears[0].bias[0] = k_off
    for lin in linears[1:-1]:
        lin.weight[0, 0] = 1.0
    # density_act = exp(scale * (S + k_off) + c + density_bias) hits `threshold` on the surface S = 3*offset - 1
    c = math.log(threshold) - model.renderer.density_bias - scale * (3 * offset - 1 + k_off)
    linears[-1].weight[0, 0] = scale
    linears[-1].bias[0] = c
    linears[-1].bias[1:4] = torch.tensor(rgb_logits)


def make_image(path: str, size: int = 64, rgba: bool = True) -> str:
    from PIL import Image

    a = np.zeros((size, size, 4), np.uint8)
    a[size // 4: 3 * size // 4, size // 3: 2 * size // 3] = [200, 40, 40, 255]
    img = Image.fromarray(a if rgba else a[..., :3])
    img.save(path)
    return path
