"""Resizing the whole asset, read from the instruction and made on its decoded surface.

The flow model learned "make it taller" per category from the pairs it saw: on a category it
never resized along an axis it falls short ("make it a little narrower" on a bottle, a held-out
combination: 0.48 of the way; made here, 1.02). A resize of the whole asset is the same operation on any asset,
so the kind reader (`kinds.py`) reads which extent and which way (`RESIZES`) and the edit is
made exactly: the source's decoded surface samples, scaled about the middle of the asset's
footprint on its lowest point (where the procedural world scales its assets: the ground), are
encoded as a delta onto the latent, as a recolour's are. The factors are the procedural
world's (1.25 for the whole asset, 1.3 along an axis), the size of step its training pairs
teach; `weight` (strength x confidence) takes that fraction of the step in log scale.

A result that would leave the cube (or come closer to its faces than ResizeConfig.limit) is
scaled only as far as fits, with a warning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..data import NoSurfaceError
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import encoded_delta
from ..world.asset import CUBE_LIMIT
from ..world.edits import FACTOR
from .kinds import RESIZES
from .recolour import decoded_surface

# "long" is a part's length (part_resize.py); a whole asset's is read as its height
AXIS_OF = {"whole": (0, 1, 2), "z": (2,), "x": (0,), "long": (2,)}


@dataclass(frozen=True)
class ResizeConfig:
    points: int = 8192            # surface samples of the source's decoded field (as a recolour's)
    mc_res: int = 64
    kind_threshold: float = 0.5   # the kind reader's probability of a whole-asset resize that takes this path
    # how far from the centre the resized surface samples may reach: short of the world's 0.97,
    # since the decoded field of a surface that close blurs onto the cube's faces (an open mesh)
    limit: float = 0.92


@dataclass(frozen=True)
class Rescale:
    """A scaling of the asset: per-axis factors about an anchor point, both in the cube."""
    factors: tuple[float, float, float]
    anchor: tuple[float, float, float]

    def apply(self, points: np.ndarray) -> np.ndarray:
        anchor = np.asarray(self.anchor, np.float32)
        return ((np.asarray(points, np.float32) - anchor) * np.asarray(self.factors, np.float32) + anchor)


def resize_factors(way: str, weight: float = 1.0) -> np.ndarray:
    """(3,) per-axis factors of a resize `way` (one of kinds.RESIZES) taken `weight` of the way."""
    if way not in RESIZES:
        raise ValueError(f"unknown resize {way!r}: one of {RESIZES}")
    extent, direction = way.split("_")
    step = FACTOR["whole" if extent == "whole" else "axis"] ** (weight if direction == "up" else -weight)
    factors = np.ones(3, np.float32)
    factors[list(AXIS_OF[extent])] = step
    return factors


def footprint_anchor(points: np.ndarray) -> np.ndarray:
    """The middle of the points' box in x and y, at their lowest z: what stays put."""
    lo, hi = points.min(0), points.max(0)
    return np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, lo[2]], np.float32)


def fitted_share(points: np.ndarray, moved: Callable[[float], np.ndarray], limit: float = CUBE_LIMIT) -> float:
    """The largest share of a move's step (in log scale; 1 when all of it fits) whose moved points,
    `moved(share)`, stay within [-limit, limit] on each axis, or within the points' own reach
    where that is already further (a decoded surface can touch the limit: shrinking must still
    work). Bisection: a resize's reach grows monotonically with the share."""
    allowed = np.maximum(np.abs(points).max(0), limit)

    def fits(share: float) -> bool:
        return bool(np.all(np.abs(moved(share)).max(0) <= allowed + 1e-6))

    if fits(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def fitted(points: np.ndarray, rescale: Rescale, limit: float = CUBE_LIMIT) -> tuple[Rescale, bool]:
    """The rescale, its growth shrunk (the same share on every axis) so that the scaled points fit
    (`fitted_share`); (rescale, whether it had to be shrunk)."""
    f = np.asarray(rescale.factors, np.float64)

    def taken(share: float) -> Rescale:
        return Rescale(tuple(float(x) for x in f ** share), rescale.anchor)

    share = fitted_share(points, lambda s: taken(s).apply(points), limit)
    return (rescale, False) if share == 1.0 else (taken(share), True)


@torch.inference_mode()
def grounded_resize(ae: TriplaneAutoencoder, latent: torch.Tensor, way: str, weight: float,
                    cfg: ResizeConfig = ResizeConfig(), seed: int = 0) -> tuple[torch.Tensor, Rescale, bool] | None:
    """The source latent (1, ...) and how to resize it -> (the resized latent, the rescale made,
    whether it was shrunk to stay in the cube), or None when the latent has no surface."""
    try:
        _, pts, rgb = decoded_surface(ae, latent, cfg.points, cfg.mc_res, seed)
    except NoSurfaceError:
        return None
    rescale = Rescale(tuple(float(x) for x in resize_factors(way, weight)), tuple(footprint_anchor(pts).tolist()))
    rescale, shrunk = fitted(pts, rescale, cfg.limit)
    cloud = np.concatenate([pts, rgb], 1).astype(np.float32)
    scaled = np.concatenate([rescale.apply(pts), rgb], 1).astype(np.float32)
    return latent + encoded_delta(ae, scaled, cloud), rescale, shrunk
