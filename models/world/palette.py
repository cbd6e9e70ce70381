"""Named colours and surface patterns of the procedural world."""
from __future__ import annotations

import numpy as np

# Twelve colours a user names in a prompt, chosen to stay distinguishable after
# decoding (measured by nearest-colour classification of vertex colours).
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.98, 0.50, 0.05),
    "yellow": (0.98, 0.88, 0.15),
    "green": (0.15, 0.65, 0.20),
    "teal": (0.05, 0.55, 0.55),
    "blue": (0.12, 0.30, 0.90),
    "purple": (0.50, 0.18, 0.70),
    "pink": (0.98, 0.55, 0.75),
    "brown": (0.45, 0.27, 0.12),
    "black": (0.06, 0.06, 0.06),
    "white": (0.95, 0.95, 0.93),
    "grey": (0.50, 0.50, 0.52),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
COLOUR_ARRAY = np.array([COLOURS[n] for n in COLOUR_NAMES], dtype=np.float32)

PATTERNS: tuple[str, ...] = ("plain", "stripes", "checker", "dots")


def nearest_colour(rgb) -> str:
    """Name of the palette colour closest to an RGB triple in [0, 1]."""
    return COLOUR_NAMES[int(nearest_colour_indices(np.asarray(rgb, dtype=np.float32)[None])[0])]


def nearest_colour_indices(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] -> (N,) index of the closest palette colour of each."""
    return ((rgb[:, None, :] - COLOUR_ARRAY[None]) ** 2).sum(-1).argmin(1)


def pattern_mask(pattern: str, points: np.ndarray) -> np.ndarray:
    """Boolean (N,) mask of points painted with a part's secondary colour."""
    if pattern == "plain":
        return np.zeros(len(points), dtype=bool)
    if pattern == "stripes":  # horizontal bands, 8 per unit height
        return (np.floor(points[:, 2] * 8.0).astype(np.int64) % 2) == 1
    if pattern == "checker":
        cells = np.floor(points * 6.0).astype(np.int64)
        return (cells.sum(axis=1) % 2) == 1
    if pattern == "dots":
        # distance to a cubic lattice of dot centres
        frac = points * 5.0 - np.round(points * 5.0)
        return np.sum(frac * frac, axis=1) < 0.09
    raise ValueError(f"unknown pattern {pattern!r}")
