"""Text -> triplane latent: a frozen sentence encoder and a rectified-flow DiT over latent tokens."""
