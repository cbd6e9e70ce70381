"""A category classifier on decoded shapes, used only to *measure* generators
(it never conditions them): a small 3D CNN on a 32^3 truncated SDF grid."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import WEIGHTS_DIR, load_module
from .geometry import grid_points
from .world.categories import CATEGORY_NAMES

GRID = 32
TRUNC = 0.1
DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "classifier.safetensors")


def sdf_features(sdf_fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(1, 32, 32, 32) truncated, scaled SDF on the cube's grid."""
    sdf = sdf_fn(grid_points(GRID)).reshape(GRID, GRID, GRID)
    return (np.clip(sdf, -TRUNC, TRUNC) / TRUNC).astype(np.float32)[None]


class ShapeClassifier(nn.Module):
    def __init__(self, n_classes: int = len(CATEGORY_NAMES), width: int = 24):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv3d(i, o, 3, padding=1), nn.GroupNorm(4, o), nn.SiLU(), nn.MaxPool3d(2))

        self.net = nn.Sequential(block(1, width), block(width, 2 * width), block(2 * width, 4 * width),
                                 block(4 * width, 4 * width), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                                 nn.Linear(4 * width, n_classes))

    def forward(self, grids: torch.Tensor) -> torch.Tensor:
        return self.net(grids)


def load_classifier(path: str = DEFAULT_WEIGHTS, device="cpu") -> ShapeClassifier:
    return load_module(path, lambda _config: ShapeClassifier(), device,
                       f"classifier weights not found: {path} (python -m models.train classifier)")


@torch.inference_mode()
def classify(model: ShapeClassifier, grids: np.ndarray) -> list[str]:
    logits = model(torch.as_tensor(grids, device=next(model.parameters()).device))
    return [CATEGORY_NAMES[i] for i in logits.argmax(-1).tolist()]
