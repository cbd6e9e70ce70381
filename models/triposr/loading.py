"""Load a TripoSR-format checkpoint folder: `config.yaml` + `model.safetensors` or `model.ckpt`.

The YAML names TripoSR's classes by dotted path; only the known TripoSR classes are accepted
(mapped to this package's modules, nothing is imported by name). Weights are read with
safetensors or `torch.load(..., weights_only=True)`, never plain unpickling, and must match the
model built from the config key for key.
"""
from __future__ import annotations

import os
import re

import torch

from .modules import (
    DINOSingleImageTokenizer,
    NeRFMLP,
    Transformer1D,
    Triplane1DTokenizer,
    TriplaneNeRFRenderer,
    TriplaneUpsampleNetwork,
)
from .system import TripoSR

CONFIG_NAME = "config.yaml"
WEIGHT_NAMES = ("model.safetensors", "model.ckpt")

CLASSES = {
    "image_tokenizer": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder": "tsr.models.network_utils.NeRFMLP",
    "renderer": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}

# transformers ViTConfig fields of the DINO checkpoints TripoSR-format configs name (their config.json
# on the Hugging Face hub), so a config naming one needs no download; other names are looked up as a
# folder (absolute or relative to the checkpoint folder) or in the Hugging Face cache, offline.
KNOWN_VITS = {
    "facebook/dino-vitb16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                 patch_size=16),
    "facebook/dino-vitb8": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                patch_size=8),
    "facebook/dino-vits16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                 patch_size=16),
    "facebook/dino-vits8": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                patch_size=8),
}
_VIT_COMMON = dict(image_size=224, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                   layer_norm_eps=1e-12, qkv_bias=True, num_channels=3)

# config keys per section -> constructor argument (None: accepted and ignored at inference)
_SECTION_KEYS = {
    "image_tokenizer": {"pretrained_model_name_or_path": "name", "enable_gradient_checkpointing": None},
    "tokenizer": {"plane_size": "plane_size", "num_channels": "num_channels"},
    "backbone": {"num_attention_heads": "num_attention_heads", "attention_head_dim": "attention_head_dim",
                 "in_channels": "in_channels", "out_channels": None, "num_layers": "num_layers", "dropout": None,
                 "norm_num_groups": "norm_num_groups", "cross_attention_dim": "cross_attention_dim",
                 "attention_bias": "attention_bias", "activation_fn": "activation_fn",
                 "only_cross_attention": "only_cross_attention", "double_self_attention": "double_self_attention",
                 "upcast_attention": None, "norm_type": "norm_type",
                 "norm_elementwise_affine": "norm_elementwise_affine", "gradient_checkpointing": None},
    "post_processor": {"in_channels": "in_channels", "out_channels": "out_channels"},
    "decoder": {"in_channels": "in_channels", "n_neurons": "n_neurons", "n_hidden_layers": "n_hidden_layers",
                "activation": "activation", "bias": "bias", "weight_init": None, "bias_init": None},
    "renderer": {"radius": "radius", "feature_reduction": "feature_reduction",
                 "density_activation": "density_activation", "density_bias": "density_bias",
                 "color_activation": "color_activation", "num_samples_per_ray": "num_samples_per_ray",
                 "randomized": "randomized"},
}


class TripoSRLoadError(ValueError):
    """The folder holds no usable TripoSR-format checkpoint (the message says why)."""

    code = "model_unavailable"


def find_checkpoint(folder: str) -> tuple[str, str]:
    """(config.yaml, weights file) in `folder`, or TripoSRLoadError naming what is missing."""
    cfg = os.path.join(folder, CONFIG_NAME)
    weights = [os.path.join(folder, n) for n in WEIGHT_NAMES if os.path.isfile(os.path.join(folder, n))]
    missing = ([CONFIG_NAME] if not os.path.isfile(cfg) else []) + ([" or ".join(WEIGHT_NAMES)] if not weights else [])
    if missing:
        raise TripoSRLoadError(f"{folder} has no {' and no '.join(missing)}")
    return cfg, weights[0]


def load_config(path: str) -> dict:
    """config.yaml -> dict with OmegaConf-style `${a.b}` interpolations resolved."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict):
        raise TripoSRLoadError(f"{path} is not a TripoSR config (expected a mapping)")
    return _resolve(cfg, cfg, 0)


def _lookup(root: dict, dotted: str):
    node = root
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise TripoSRLoadError(f"config interpolation ${{{dotted}}} points at nothing")
        node = node[part]
    return node


def _resolve(node, root: dict, depth: int):
    if depth > 20:
        raise TripoSRLoadError("config interpolations nest too deeply")
    if isinstance(node, dict):
        return {k: _resolve(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, depth) for v in node]
    if isinstance(node, str):
        whole = re.fullmatch(r"\$\{([^${}]+)\}", node.strip())
        if whole:
            return _resolve(_lookup(root, whole.group(1).strip()), root, depth + 1)
        if "${" in node:
            def sub(m):
                return str(_resolve(_lookup(root, m.group(1).strip()), root, depth + 1))

            return re.sub(r"\$\{([^${}]+)\}", sub, node)
    return node


def _section(cfg: dict, name: str) -> dict:
    cls = cfg.get(f"{name}_cls")
    if cls != CLASSES[name]:
        raise TripoSRLoadError(f"config {name}_cls is {cls!r}; this adapter implements {CLASSES[name]!r}")
    raw = cfg.get(name) or {}
    if not isinstance(raw, dict):
        raise TripoSRLoadError(f"config section {name!r} must be a mapping")
    unknown = sorted(set(raw) - set(_SECTION_KEYS[name]))
    if unknown:
        raise TripoSRLoadError(f"config section {name!r} has settings this adapter does not implement: {unknown}")
    return {_SECTION_KEYS[name][k]: v for k, v in raw.items() if _SECTION_KEYS[name][k] is not None}


def vit_config(name: str, base_dir: str):
    """The image tokenizer's ViTConfig, offline: a local folder with config.json, a known DINO name,
    or the Hugging Face cache."""
    from transformers import ViTConfig

    for cand in (name, os.path.join(base_dir, name)):
        if os.path.isfile(os.path.join(cand, "config.json")):
            return ViTConfig.from_pretrained(cand, local_files_only=True)
    if name in KNOWN_VITS:
        return ViTConfig(**_VIT_COMMON, **KNOWN_VITS[name])
    try:
        return ViTConfig.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/HF errors
        raise TripoSRLoadError(f"image tokenizer {name!r}: not a known DINO model, no folder with config.json, "
                               f"and not in the Hugging Face cache ({type(exc).__name__})") from None


def build_model(cfg: dict, base_dir: str = ".") -> TripoSR:
    """A randomly initialised TripoSR from a resolved config dict."""
    if "cond_image_size" not in cfg:
        raise TripoSRLoadError("config has no cond_image_size")
    tok_img = _section(cfg, "image_tokenizer")
    backbone = _section(cfg, "backbone")
    if backbone.pop("only_cross_attention", False):
        raise TripoSRLoadError("backbone.only_cross_attention is not supported (TripoSR itself cannot run it)")
    if backbone.pop("norm_type", "layer_norm") != "layer_norm":
        raise TripoSRLoadError("backbone.norm_type must be layer_norm")
    if backbone.get("in_channels") is None:
        raise TripoSRLoadError("backbone.in_channels is required")
    renderer = _section(cfg, "renderer")
    renderer.pop("num_samples_per_ray", None)
    renderer.pop("randomized", None)
    try:
        return TripoSR(
            cfg["cond_image_size"],
            DINOSingleImageTokenizer(vit_config(tok_img.get("name", "facebook/dino-vitb16"), base_dir)),
            Triplane1DTokenizer(**_section(cfg, "tokenizer")),
            Transformer1D(**backbone),
            TriplaneUpsampleNetwork(**_section(cfg, "post_processor")),
            NeRFMLP(**_section(cfg, "decoder")),
            TriplaneNeRFRenderer(**renderer),
        )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TripoSRLoadError):
            raise
        raise TripoSRLoadError(f"config does not build a TripoSR model: {exc}") from None


def read_weights(path: str) -> dict:
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - anything that is not a plain tensor dict is refused
        raise TripoSRLoadError(f"{os.path.basename(path)} is not a weights-only checkpoint: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TripoSRLoadError(f"{os.path.basename(path)} does not hold a state dict of tensors")
    return state


def load_triposr(folder: str, device: str | torch.device = "cpu") -> TripoSR:
    """Build from config.yaml and load the weights strictly (every key, every shape)."""
    cfg_path, weights_path = find_checkpoint(folder)
    model = build_model(load_config(cfg_path), folder)
    state = read_weights(weights_path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(shapes)} with other shapes (e.g. {shapes[:3]})" if shapes else ""]
        raise TripoSRLoadError(f"{os.path.basename(weights_path)} does not match {CONFIG_NAME}: "
                               + "; ".join(p for p in parts if p))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
