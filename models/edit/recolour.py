"""Recolour edits grounded on the asset and landed on the latent as an encoded delta.

The part grounding network (`grounding.py`) says, for points on the source's decoded surface,
whether the instruction addresses them and which colour it asks for. The same points are then
encoded twice by the autoencoder's own encoder: with the source's decoded colours, and with the
asked colour blended in over the region (by `weight`: strength x the instruction's confidence).
The difference of the two latents is the edit: the encoder sees identical points, so its
sampling and re-encoding drift cancel and the delta carries the colour change alone (the edit
model's training pairs are built the same way; see models/edit/data.py). The autoencoder
decodes some colours off what it was given, so the target's colours are then corrected twice
by what the decoded edit still misses (one encoder pass and one colour query each); weight 0
gives the source exactly. The shape drift the delta still carries is not shown: the backend
composites a recolour with its reference's shape (`composite.CompositeField`, keep_shape).

Why not fit the latent to the recoloured field instead: 16 Adam steps (0.8 s) left a teal nose
cone bluish (colour error 0.17 on the part; 50 steps: 0.07, 8 s), where the encoder shows a
part's colour at once (the encoded true targets get 95% of recoloured surface points right).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import NoSurfaceError, grid_surface_points
from ..mesh import sdf_grid
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import LatentField, encode_cloud
from .grounding import GROUNDED_KINDS, PartGrounding

RECOLOUR_KINDS = tuple(GROUNDED_KINDS.index(k) for k in ("recolour_all", "recolour_part"))


@dataclass(frozen=True)
class RecolourConfig:
    points: int = 8192   # surface samples of the source's decoded field (the edit pairs' cloud size)
    # grid the samples' surface is found on (one of mesh.RESOLUTIONS): a mug's thin handle
    # recoloured blue shows 75% blue from a 64^3 grid, 50% from 48^3 (the encoded exact recolour: 96%)
    mc_res: int = 64
    # The autoencoder does not decode every colour it is given as given (it learned the world's
    # 12 palette colours: grey 0.3 came back green-grey); each calibration step adds to the
    # encoded colours what the decoded ones still miss. Measured on 8 text-made assets x 4
    # colours, region colour L1: palette colours 0.054 -> 0.039 -> 0.033 (1, 2 steps), random
    # RGB 0.133 -> 0.117 -> 0.104; a third step adds nothing; ~35 ms a step.
    calibration_steps: int = 2


@torch.inference_mode()
def recolour_probability(model: PartGrounding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) probability that each instruction asks for a recolour (of the whole asset or a part)."""
    _, _, kind = model.read(tokens, mask)
    return kind.softmax(-1)[:, list(RECOLOUR_KINDS)].sum(-1)


def reads_as_recolour(model: PartGrounding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the instructions the grounded recolour path takes (the rest go to the flow model)."""
    return recolour_probability(model, tokens, mask) > 0.5


@torch.inference_mode()
def recolour_clouds(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                    mask: torch.Tensor, weight: float, cfg: RecolourConfig = RecolourConfig(), seed: int = 0):
    """One latent (1, ...) and instruction -> (source cloud (N, 6), recoloured cloud (N, 6), region
    probability (N,)): the source's decoded surface with its own and with the asked colours."""
    field = LatentField(ae, latent)
    grid = sdf_grid(field.sdf, cfg.mc_res)  # coarse to fine: only cells near the surface at 64^3
    pts = grid_surface_points(grid, field.sdf, cfg.points, np.random.default_rng([seed, 0x52434C52]))
    rgb = field.rgb(pts)
    p = torch.as_tensor(pts, device=latent.device)[None]
    logits, colour, _ = model(field.planes, latent[:1], p, tokens, mask)
    region = torch.sigmoid(logits[0]).cpu().numpy()
    target = rgb + weight * region[:, None] * (colour[0].cpu().numpy()[None] - rgb)
    return np.concatenate([pts, rgb], 1), np.concatenate([pts, target], 1).astype(np.float32), region


def grounded_recolour(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor, weight: float, cfg: RecolourConfig = RecolourConfig(),
                      seed: int = 0) -> torch.Tensor:
    """The source latent (1, 3, C, R, R) recoloured as the instruction asks, its shape kept; a
    latent with no surface in the cube has nothing to paint and comes back as it was."""
    try:
        source, target, region = recolour_clouds(ae, model, latent, tokens, mask, weight, cfg, seed)
    except NoSurfaceError:
        return latent.clone()
    return encoded_recolour(ae, latent, source, target, weight * region, cfg.calibration_steps)


@torch.inference_mode()
def encoded_recolour(ae: TriplaneAutoencoder, latent: torch.Tensor, source: np.ndarray, target: np.ndarray,
                     blend: np.ndarray, calibration_steps: int) -> torch.Tensor:
    """latent + E(target) - E(source) for two coloured clouds of the same points (N, 6), the
    encoded target's colours corrected `calibration_steps` times by what its decoding still
    misses, in proportion to `blend` (N,): how much of each point's colour the edit sets (0
    leaves a point, and with it an unedited latent, exactly as it was)."""
    e_source = encode_cloud(ae, source)
    given, points = target.copy(), source[:, :3]
    for step in range(calibration_steps + 1):
        edited = latent + (encode_cloud(ae, given) - e_source)
        if step == calibration_steps:
            break
        shown = LatentField(ae, edited).rgb(points)
        given[:, 3:] = np.clip(given[:, 3:] + blend[:, None] * (target[:, 3:] - shown), 0.0, 1.0)
    return edited
