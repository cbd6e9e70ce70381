"""Colour edits (recolours, patterns added or removed) grounded on the asset and landed on the
latent as an encoded delta.

The part grounding network (`grounding.py`) says, for points on the source's decoded surface,
whether the instruction paints them and which colour they take: the colour it asks for, or for
a removed pattern its part's own colour, read from the part's other points. The same points
are then encoded twice by the autoencoder's own encoder: with the source's decoded colours,
and with the edit's colour blended in over the region (by `weight`: strength x the
instruction's confidence).
The difference of the two latents is the edit: the encoder sees identical points, so its
sampling and re-encoding drift cancel and the delta carries the colour change alone (the edit
model's training pairs are built the same way; see models/edit/data.py). The autoencoder
decodes some colours off what it was given, so the target's colours are then corrected twice
by what the decoded edit still misses (one encoder pass and one colour query each), and the
step that misses least is kept; weight 0 gives the source exactly. The shape drift the delta
still carries is not shown: the backend composites a colour edit with its reference's shape
(`composite.CompositeField`, keep_shape).

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
from ..world.palette import COLOUR_ARRAY, PATTERNS, nearest_colour_indices, pattern_mask
from ..world.shapes import GROUND
from .grounding import GROUNDED_KINDS, PartGrounding

# the edit kinds the grounded path makes, and the path each is recorded under (edit metadata);
# both paths change colour alone, so their results are shown with the source's shape
GROUNDED_PATHS = {"recolour_all": "grounded_recolour", "recolour_part": "grounded_recolour",
                  "add_pattern": "grounded_pattern", "remove_pattern": "grounded_pattern"}
SHAPE_KEEPING_PATHS = frozenset(GROUNDED_PATHS.values())


PALETTE_NEAR = 0.05   # largest RGB channel difference from a palette colour that counts as on it


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
    # Off the palette the autoencoder may have no code for a colour at all, and calibration cannot
    # find one: a grey chair asked for the network's reading of "white" (0.85, 0.87, 0.78) decoded
    # pink (0.96, 0.59, 0.80), a chair back asked for violet (0.52, 0.15, 0.46) stayed grey, while
    # the nearest palette colours decode within 0.01. When the calibrated result still misses
    # the colour asked by more than this (mean absolute RGB over the painted points), the nearest
    # palette colour is painted too and whichever decodes closer to the colour asked is kept
    # (navy on a white mug decodes as navy, and stays navy). None: never.
    palette_fallback: float | None = 0.06
    # the kinds taken by this path (the rest go to the flow model; models/cards/edit.md)
    kinds: tuple[str, ...] = ("recolour_all", "recolour_part", "add_pattern", "remove_pattern")


@torch.inference_mode()
def kind_probabilities(model: PartGrounding, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, len(GROUNDED_KINDS)): the network's probability of each edit kind per instruction."""
    return model.read(tokens, mask)[2].softmax(-1)


def grounded_kinds(probabilities: torch.Tensor,
                   kinds: tuple[str, ...] = RecolourConfig.kinds) -> list[str | None]:
    """Per instruction, the colour edit kind the grounded path makes of it, or None for the flow
    model: taken when the network reads the instruction (`kind_probabilities`) as one of `kinds`
    with probability above a half (summed over them), as the likeliest of them."""
    p = probabilities[:, [GROUNDED_KINDS.index(k) for k in kinds]]
    return [kinds[int(row.argmax())] if float(row.sum()) > 0.5 else None for row in p]


@torch.inference_mode()
def recolour_clouds(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                    mask: torch.Tensor, weight: float, cfg: RecolourConfig = RecolourConfig(), seed: int = 0,
                    kind: str = "recolour_all", pattern: str | None = None,
                    colour: tuple[float, float, float] | None = None):
    """One latent (1, ...) and instruction -> (source cloud (N, 6), repainted cloud (N, 6), share of
    each point's colour the edit sets (N,), before `weight`; the colour painted, (1, 3)): the
    source's decoded surface with its own and with the edit's colours. An added pattern whose
    kind is known (`pattern`, read by the kind reader) is painted as Kiln's own pattern over the
    part the network marks; otherwise where the network's region says. The colour painted is
    `colour` (RGB in [0, 1], a value the instruction wrote) where given, else the network's."""
    field, pts, rgb = decoded_surface(ae, latent, cfg.points, cfg.mc_res, seed)
    p = torch.as_tensor(pts, device=latent.device)[None]
    out = model(field.planes, latent[:1], p, tokens, mask)
    region = torch.sigmoid(out.region[0]).cpu().numpy()
    if kind == "add_pattern" and pattern is not None:
        # the network sees a pattern blurred by the autoencoder and marks it poorly (region IoU
        # 0.33), but finds the part (0.97): the pattern painted is Kiln's own, at the scale its
        # blurred marks match best
        part = torch.sigmoid(out.part[0]).cpu().numpy()
        region = part * snapped_pattern(pattern, pts, part > 0.5, region)
    if kind == "remove_pattern":
        region, painted = unpatterned_colour(rgb, region, torch.sigmoid(out.part[0]).cpu().numpy(), pts)
    elif colour is not None:
        painted = np.asarray(colour, np.float32).reshape(1, 3)
    else:
        painted = out.colour[0].cpu().numpy()[None]
    source = np.concatenate([pts, rgb], 1)
    return source, repainted(source, painted, weight * region), region, painted


# scales a pattern is tried at about the ground's centre: a procedural asset's patterns are drawn
# in its own frame, which the world scales to its category's size (training stream: 1st-99th
# percentile 0.88-2.04, median 1.18)
PATTERN_SCALES = np.round(np.arange(0.8, 2.21, 0.01), 2)
PATTERN_SCALE_PRIOR = 1.18
# below this correlation the network's marks say nothing of the pattern's scale (a checker's:
# 0.01-0.05, stripes' and dots': 0.4-0.9) and the prior is drawn
PATTERN_MARKS_INFORMATIVE = 0.2


def drawn_pattern(pattern: str, points: np.ndarray, scale: float) -> np.ndarray:
    """(N,) bool: Kiln's `pattern` (`palette.pattern_mask`) on the points, drawn `scale` times its
    size about the middle of the ground."""
    anchor = np.array([0.0, 0.0, GROUND], np.float32)
    return pattern_mask(pattern, (points - anchor) / scale + anchor)


def snapped_pattern(pattern: str, points: np.ndarray, on_part: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """(N,) bool: Kiln's `pattern` (`palette.pattern_mask`) on the points, drawn at the scale
    (PATTERN_SCALES, about the middle of the ground) whose pattern best correlates, over the
    part's points, with the grounding network's soft marks (N,) of where the pattern goes, or at
    PATTERN_SCALE_PRIOR where no scale correlates with them."""
    best, best_score = PATTERN_SCALE_PRIOR, PATTERN_MARKS_INFORMATIVE
    if on_part.sum() >= 16:
        part, part_marks = points[on_part], marks[on_part]  # scored on the part's points only
        for scale in PATTERN_SCALES:
            m = drawn_pattern(pattern, part, float(scale)).astype(np.float32)
            if m.std() == 0:
                continue
            score = float(np.corrcoef(m, part_marks)[0, 1])
            if score > best_score:
                best, best_score = float(scale), score
    return drawn_pattern(pattern, points, best)


def decoded_surface(ae: TriplaneAutoencoder, latent: torch.Tensor, points: int, mc_res: int,
                    seed: int) -> tuple[LatentField, np.ndarray, np.ndarray]:
    """A latent's decoded field, `points` samples of its surface (N, 3) and their decoded colours
    (N, 3); NoSurfaceError when it has no surface in the cube."""
    field = LatentField(ae, latent)
    grid = sdf_grid(field.sdf, mc_res)  # coarse to fine: only cells near the surface
    pts = grid_surface_points(grid, field.sdf, points, np.random.default_rng([seed, 0x52434C52]))
    return field, pts, field.rgb(pts)


def repainted(source: np.ndarray, colour: np.ndarray, blend: np.ndarray) -> np.ndarray:
    """A coloured cloud (N, 6) with `blend` (N,) of each point's colour set to `colour` (1, 3)."""
    rgb = source[:, 3:]
    return np.concatenate([source[:, :3], rgb + blend[:, None] * (colour - rgb)], 1).astype(np.float32)


def nearest_palette_colours(rgb: np.ndarray) -> np.ndarray:
    """(N, 3) colours -> the nearest of the procedural world's palette colours, (N, 3)."""
    return COLOUR_ARRAY[nearest_colour_indices(rgb)]


# share of a patterned part's points at each end of its colours' spread read as that end's colour
PATTERN_END = 0.1
# share of a part's points on one palette colour above which the decoding barely shows its
# pattern: the part's colour is that colour's (black walls under red dots decode 91% black, the
# spread left is the decoder's noise, whose lighter end decodes brown-green when painted)
PATTERN_UNSEEN = 0.8
# the share of a part's colour variance Kiln's own pattern must explain for its side to be read
# as the pattern: stripes fitted to blurred stripes explain 0.5-0.8, the wrong pattern or a
# checker's blur 0.03-0.35 (40 training and held-out removals)
PATTERN_FIT = 0.5
PATTERN_FIT_POINTS = 2048


def unpatterned_colour(rgb: np.ndarray, pattern: np.ndarray, part: np.ndarray,
                       points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A removed pattern: (the share of each point's colour to set (N,), the colour (1, 3)). The
    whole part takes its own colour (painting all of it also covers the pattern points the
    network misses; the others already have the part's colour).

    The autoencoder blurs a pattern, pulling the part's colour and the pattern's toward their
    mix, so neither the median of the part's colours nor that of its unmarked points is the
    part's own (a yellow seat under black dots came back grey). The part's decoded colours
    spread along one line, mix to mix; its two ends, where the line passes its `PATTERN_END`
    most extreme points each way, are the least blurred, and the part's own colour is one of
    them. Which one: where Kiln's own pattern, drawn over the part's `points` at the scale
    that best separates its colours (`fitted_pattern`), explains them clearly, the end on the
    side it leaves unpainted; otherwise the end whose half of the part the network marks less
    as the pattern. Where the decoding barely shows the pattern (PATTERN_UNSEEN of the part on
    one palette colour) the spread is the decoder's noise and the part's colour is that colour's.
    Measured on 48 held-out removals (24 held-out phrasings, 24 training) with the network's
    marks alone: the part's colour right 33 times, against 30 for the median of the unmarked
    points; with the fitted pattern 29 of 40 against 27 (a tree's green leaves under grey
    stripes). In the edit evaluation (30 held-out removals, 27 judged) 10 -> 12 succeed (that
    tree; black walls under red dots, whose lighter end decoded brown-green), untouched colour
    error 0.042 -> 0.028. Checks stay hard: they cover half a part, the blur leaves little to
    tell which colour is the part's, and no scale of Kiln's checker explains the blurred
    colours."""
    on_part = part > 0.5
    if on_part.sum() < 16:  # nothing left to read the part's colour from
        return np.zeros_like(part), rgb[:1]
    colours, marks = rgb[on_part], pattern[on_part]
    labels = nearest_colour_indices(colours)
    common = np.bincount(labels).argmax()
    if (labels == common).mean() >= PATTERN_UNSEEN:
        return part, np.median(colours[labels == common], 0)[None].astype(np.float32)
    mean = colours.mean(0)
    line = np.linalg.svd(colours - mean, full_matrices=False)[2][0]
    along = (colours - mean) @ line
    lo, hi = np.quantile(along, [PATTERN_END, 1.0 - PATTERN_END])
    drawn = fitted_pattern(points[on_part], colours) if points is not None else None
    if drawn is not None and drawn.any() and not drawn.all():
        own_high = along[~drawn].mean() > along[drawn].mean()
    else:
        middle = (lo + hi) / 2
        low_marks = marks[along < middle].mean() if (along < middle).any() else 1.0
        high_marks = marks[along >= middle].mean() if (along >= middle).any() else 1.0
        own_high = high_marks <= low_marks
    end = hi if own_high else lo
    return part, np.clip(mean + end * line, 0.0, 1.0)[None].astype(np.float32)




def fitted_pattern(points: np.ndarray, colours: np.ndarray) -> np.ndarray | None:
    """(N,) bool: Kiln's pattern (stripes, checker or dots, `drawn_pattern` at one of
    PATTERN_SCALES) that best separates the points' colours into two groups, or None where none
    explains PATTERN_FIT of their variance."""
    step = max(1, len(points) // PATTERN_FIT_POINTS)
    pts, rgb = points[::step], colours[::step]
    centred = rgb - rgb.mean(0)
    total = float((centred ** 2).sum())
    if total <= 0:
        return None
    best, best_score = None, PATTERN_FIT
    for name in PATTERNS[1:]:
        for scale in PATTERN_SCALES:
            m = drawn_pattern(name, pts, float(scale))
            n = int(m.sum())
            if n < 8 or n > len(m) - 8:
                continue
            # variance between the two groups over the total (R^2 of the two-group split)
            between = n * (centred[m].mean(0) ** 2).sum() + (len(m) - n) * (centred[~m].mean(0) ** 2).sum()
            score = float(between) / total
            if score > best_score:
                best, best_score = (name, float(scale)), score
    if best is None:
        return None
    return drawn_pattern(best[0], points, best[1])


def grounded_recolour(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                      mask: torch.Tensor, weight: float, cfg: RecolourConfig = RecolourConfig(),
                      seed: int = 0, kind: str = "recolour_all", pattern: str | None = None,
                      colour: tuple[float, float, float] | None = None) -> torch.Tensor:
    """The source latent (1, 3, C, R, R) repainted as the instruction asks (a colour edit of
    `kind`; `colour` a value it wrote, `recolour_clouds`), its shape kept; a latent with no
    surface in the cube has nothing to paint and comes back as it was."""
    try:
        source, target, region, painted = recolour_clouds(ae, model, latent, tokens, mask, weight, cfg, seed, kind,
                                                          pattern, colour)
    except NoSurfaceError:
        return latent.clone()
    blend = weight * region
    edited, miss = encoded_recolour(ae, latent, source, target, blend, cfg.calibration_steps)
    on_palette = nearest_palette_colours(painted)
    # a colour read within PALETTE_NEAR of the palette would paint nearly the same: no second try
    # (a part's soft region edge alone misses ~0.12: "make the seat blue" on a red chair)
    if cfg.palette_fallback is None or miss is None or miss <= cfg.palette_fallback or float(
            np.abs(on_palette - painted).max()) < PALETTE_NEAR:
        return edited
    fallback, _ = encoded_recolour(ae, latent, source, repainted(source, on_palette, blend), blend,
                                   cfg.calibration_steps)
    return fallback if colour_miss(ae, fallback, target, blend) < miss else edited


def colour_miss(ae: TriplaneAutoencoder, latent: torch.Tensor, target: np.ndarray, blend: np.ndarray) -> float:
    """How far the latent's decoded colours are from a target cloud's (N, 6): mean absolute RGB
    difference, each point weighted by `blend` (N,)."""
    diff = np.abs(target[:, 3:] - LatentField(ae, latent).rgb(target[:, :3])).mean(1)
    return float((blend * diff).sum() / max(float(blend.sum()), 1e-6))


@torch.inference_mode()
def encoded_recolour(ae: TriplaneAutoencoder, latent: torch.Tensor, source: np.ndarray, target: np.ndarray,
                     blend: np.ndarray, calibration_steps: int) -> tuple[torch.Tensor, float | None]:
    """latent + E(target) - E(source) for two coloured clouds of the same points (N, 6), the
    encoded target's colours corrected up to `calibration_steps` times by what its decoding still
    misses, in proportion to `blend` (N,): how much of each point's colour the edit sets (0
    leaves a point, and with it an unedited latent, exactly as it was). Of the calibrated
    latents the one whose decoding misses least is returned: off the palette the encoder's
    response to a colour is not monotone, and a step can miss more (a chair asked for light
    grey went pinker with each step). Also returns that latent's `colour_miss` (None without
    calibration: nothing was decoded)."""
    e_source = encode_cloud(ae, source)
    given, points = target.copy(), source[:, :3]
    best, best_miss = None, np.inf
    for _ in range(calibration_steps + 1):
        edited = latent + (encode_cloud(ae, given) - e_source)
        if calibration_steps == 0:
            return edited, None
        miss = blend[:, None] * (target[:, 3:] - LatentField(ae, edited).rgb(points))
        total = float(np.abs(miss).sum())
        if total < best_miss:
            best, best_miss = edited, total
        given[:, 3:] = np.clip(given[:, 3:] + miss, 0.0, 1.0)
    return best, best_miss / max(3.0 * float(blend.sum()), 1e-6)
