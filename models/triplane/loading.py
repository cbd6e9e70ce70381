from __future__ import annotations

import os

import torch

from ..checkpoint import WEIGHTS_DIR, load_module
from .autoencoder import TriplaneAutoencoder
from .config import AutoencoderConfig

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "autoencoder.safetensors")


def load_autoencoder(path: str = DEFAULT_WEIGHTS, device: str | torch.device = "cpu") -> TriplaneAutoencoder:
    """Load the shipped (or a given) autoencoder in eval mode."""
    return load_module(path, lambda config: TriplaneAutoencoder(AutoencoderConfig(**config)), device,
                       f"autoencoder weights not found: {path} (train with `python -m models.train autoencoder`)")
