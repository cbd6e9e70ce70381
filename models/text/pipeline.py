"""Text -> latent -> coloured mesh, the inference API the backend calls.

    gen = TextToAsset.load(autoencoder, device=device)
    latent, warnings = gen.generate_latent("a red chair with a tall back", seed=3)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..checkpoint import WEIGHTS_DIR, load_network
from ..world.palette import nearest_colour
from .colour_value import ColourValue, colour_value, hex_code
from .conditioning import TEXT_STAT_KEYS, standardise_text
from .dit import DiTConfig, LatentDiT
from .encoder import SentenceEncoder, shared_encoder
from .flow import initial_noise, sample

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "text.safetensors")
DEFAULT_STEPS = 8
DEFAULT_GUIDANCE = 3.0
# guidance on the steps that start above this t only (flow.sample). 0.5 was measured and not made
# the default: more samples in one piece (held-out phrasings 70% -> 78%) but fewer accent colours
# (0.54 -> 0.51, 0.53 -> 0.45) and less diversity ("a car" 7 -> 4 of 8) (models/cards/text.md)
DEFAULT_GUIDANCE_UNTIL = 0.0


class EmptyPromptError(ValueError):
    code = "bad_request"


@dataclass
class TextModel:
    dit: LatentDiT
    latent_mean: torch.Tensor   # (3, C, 1, 1)
    latent_std: torch.Tensor
    caption_bank: torch.Tensor  # (N, 384) unit vectors of training captions
    concept_bank: torch.Tensor  # (K, 384)
    concepts: list
    text_stats: dict            # per-dimension mean/std of pooled and token features (training captions)
    ood_threshold: float
    meta: dict

    @classmethod
    def load(cls, path: str = DEFAULT_WEIGHTS, device="cpu") -> "TextModel":
        dit, state, meta = load_network(path, lambda c: LatentDiT(DiTConfig(**c)), "dit", device,
                                        "python -m models.train text")
        return cls(dit, state["latent_mean"], state["latent_std"], state["caption_bank"].float(),
                   state["concept_bank"].float(), meta["concepts"], {k: state[k] for k in TEXT_STAT_KEYS},
                   float(meta["ood_threshold"]), meta)

    def normalise(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latent_mean) / self.latent_std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.latent_std + self.latent_mean

    def condition(self, pooled: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple:
        return standardise_text(pooled, tokens, mask, self.text_stats)


class TextToAsset:
    def __init__(self, model: TextModel, encoder: SentenceEncoder):
        self.model = model
        self.encoder = encoder

    @classmethod
    def load(cls, path: str = DEFAULT_WEIGHTS, device="cpu") -> "TextToAsset":
        return cls(TextModel.load(path, device), shared_encoder(device))

    def prompt_warnings(self, pooled: torch.Tensor) -> list[str]:
        """Warn when a prompt is far from every training caption, naming the nearest known concepts."""
        sim = float((self.model.caption_bank @ pooled).max())
        if sim >= self.model.ood_threshold:
            return []
        near = torch.topk(self.model.concept_bank @ pooled, 4).indices.tolist()
        names = ", ".join(self.model.concepts[i] for i in near)
        return [f"the prompt is far from what the bundled model knows (similarity {sim:.2f} < "
                f"{self.model.ood_threshold:.2f}); nearest known concepts: {names}"]

    @torch.inference_mode()
    def generate_latents(self, prompts: list[str], seeds: list[int], steps: int = DEFAULT_STEPS,
                         guidance: float = DEFAULT_GUIDANCE, progress: Callable | None = None,
                         cancel: Callable | None = None, guidance_until: float = DEFAULT_GUIDANCE_UNTIL
                         ) -> tuple[torch.Tensor, list[list[str]]]:
        """Batched: one latent (B, 3, C, R, R) per prompt/seed pair, and warnings per prompt."""
        if any(not p or not p.strip() for p in prompts):
            raise EmptyPromptError("the prompt is empty: describe the asset, e.g. 'a red chair'")
        values = [colour_value(p) for p in prompts]
        enc = self.encoder.encode([v.reading for v in values])
        warnings = [[*value_warning(v), *self.prompt_warnings(enc.pooled[i])] for i, v in enumerate(values)]
        m = self.model
        cfg = m.dit.cfg
        shape = (1, 3, cfg.latent_channels, cfg.latent_res, cfg.latent_res)
        noise = torch.cat([initial_noise(shape, s, enc.pooled.device) for s in seeds])
        uncond = m.dit.null_condition(len(prompts), enc.tokens.shape[1])
        x = sample(m.dit, m.condition(enc.pooled, enc.tokens, enc.mask), uncond, noise, steps=steps, guidance=guidance,
                   progress=progress, cancel=cancel, guidance_until=guidance_until)
        return m.denormalise(x), warnings

    def generate_latent(self, prompt: str, seed: int = 0, **kw) -> tuple[torch.Tensor, list[str]]:
        latents, warnings = self.generate_latents([prompt], [seed], **kw)
        return latents, warnings[0]


def value_warning(value: ColourValue) -> list[str]:
    """A prompt's colour value is made as the nearest palette colour: say so, and how to get the
    exact one."""
    if value.rgb is None:
        return []
    word = nearest_colour(np.asarray(value.rgb, np.float32))
    return [f"colour values are generated as the nearest of the model's colours, here {word}; to paint the exact "
            f"colour, edit the asset with the value (e.g. 'make it {hex_code(value.rgb)}')"]


def nearest_colour_share(colors: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float]:
    """Share of the surface (vertex-weighted) closest to each palette colour."""
    from ..world.palette import COLOUR_ARRAY, COLOUR_NAMES

    d = ((colors[:, None, :] - COLOUR_ARRAY[None]) ** 2).sum(-1)
    idx = d.argmin(1)
    w = np.ones(len(colors)) if weights is None else weights
    share = np.bincount(idx, weights=w, minlength=len(COLOUR_NAMES)) / w.sum()
    return {COLOUR_NAMES[i]: float(share[i]) for i in range(len(COLOUR_NAMES))}
