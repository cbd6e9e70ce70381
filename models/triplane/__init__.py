"""Triplane autoencoder: coloured point cloud -> compact latent triplane -> full triplane -> (SDF, RGB)."""
from .autoencoder import TriplaneAutoencoder
from .config import AutoencoderConfig

__all__ = ["AutoencoderConfig", "TriplaneAutoencoder"]
