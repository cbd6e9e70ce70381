"""Resizing one part, grounded on the asset and made on its decoded surface.

The flow model learned "make the pole longer" per category from the pairs it saw; on a lamp,
a combination it never trained on, it went 0.29 of the way, and a sword's shorter handle 0.44.
Resizing a part is, on any asset, the same few operations on the part's surface: the grounding
network (`grounding.py`) marks which decoded surface samples are the part the instruction
names, the kind reader (`kinds.py`) reads which way (`RESIZES`: its length, its width or its
size, up or down), and the samples are moved exactly:

  length ("longer", "taller")  the horizontal slab of the asset that the part spans is
                               stretched along z from its bottom, and everything above the slab
                               is carried up with the part's top: longer legs lift a chair's
                               seat and back, a longer pole lifts a lamp's shade, a shorter
                               handle lowers a sword's guard and blade
  width ("wider", "narrower")  each piece of the part is scaled about its own middle along its
                               horizontal extents (both for a round part, the longer one for a
                               sword's guard)
  size ("bigger", "smaller")   each piece scaled about its own middle along its large extents
                               (a wheel's radius, not its thickness; a cap's radius)

A piece is a connected group of the part's samples, so a car's four wheels grow each in place
rather than apart. Scaled across (width, size), a piece carries what hangs on it alone within
its footprint (`carried_pieces`): a narrower seat keeps its legs under its corners and its back
as wide as itself, as the procedural world builds chairs and tables; moved alone, the seat's
change was one the autoencoder hardly showed (edit evaluation, 41 held-out part resizes:
34 -> 36 right, a chair's narrower seat and a table's narrower top; none lost). The moved
samples are encoded as a delta onto the latent, as a whole-asset resize's are (`resize.py`).
The factor is the procedural world's 1.35, the step its part resizes take; `weight` (strength
x confidence) takes that share of the step in log scale, and a result that would leave the
cube is resized only as far as it fits.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import encoded_delta
from ..world.edits import FACTOR
from .grounding import PartGrounding
from .kinds import RESIZES
from .removal import marked_part
from .resize import fitted_share

# an extent counts as one of a piece's large ones when it is at least this share of the largest
LARGE_EXTENT = 0.75
HORIZONTAL = np.array([True, True, False])


@dataclass(frozen=True)
class PartResizeConfig:
    points: int = 8192            # surface samples of the source's decoded field (as a recolour's)
    mc_res: int = 64
    part_threshold: float = 0.5   # grounding's part probability that marks a sample as the part's
    # shares of the samples the part may hold: fewer and no part was found (the flow model edits
    # instead), more and it is the whole asset
    min_share: float = 0.002
    max_share: float = 0.9
    link: float = 0.08            # samples this close are one piece (a chair's legs are 0.3+ apart)
    # a piece under this share of the part's samples is a stray mark of the grounding network, not
    # part of it (a seat's grounding reaches 40 of the back's 3000 samples)
    min_piece: float = 0.05
    # nor is one under this share of the median piece's (a part is one piece or copies: a strip
    # of 97 samples marked beside a chair's seat of 1783)
    min_copy: float = 0.4
    # a group of the rest's samples spans a part's piece along an axis where the samples touching
    # the piece reach this share of its extent (a chair's back across its seat)
    spans: float = 0.8
    # a part this much longer across than high is long across: a car's body ("longer" is its length)
    lying: float = 3.0
    span_quantile: float = 0.01   # the part's z span, from these quantiles (a stray sample is not the part)
    limit: float = 0.92           # as resize.ResizeConfig.limit


def pieces(points: np.ndarray, link: float) -> np.ndarray:
    """(N,) label of the connected group each point belongs to (points within `link` are joined)."""
    pairs = cKDTree(points).query_pairs(link, output_type="ndarray")
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def part_pieces(points: np.ndarray, part: np.ndarray, link: float, min_piece: float,
                min_copy: float = 0.0) -> np.ndarray:
    """(N,) piece of each sample: the part's samples (`part` (N,) bool) in connected groups
    (`pieces`), numbered from 0; -1 off the part, and on a group holding under `min_piece` of the
    part's samples or under `min_copy` of the median group's (a stray mark of the grounding
    network: a part's pieces are one piece or copies of one another)."""
    label = np.full(len(points), -1, np.int64)
    found = pieces(points[part], link)
    sizes = np.bincount(found)
    big = sizes >= min_piece * sizes.sum()
    kept = np.flatnonzero(big & (sizes >= min_copy * np.median(sizes[big]))) if big.any() else []
    renumbered = np.full(len(sizes), -1, np.int64)
    renumbered[kept] = np.arange(len(kept))
    label[part] = renumbered[found]
    return label


@dataclass(frozen=True)
class PartRescale:
    """A part resize as a map of points in the cube. `extent` "z" or "long": the slab `span` of
    the asset along `axis` stretched about the point `anchor` of the way up it (0: its bottom,
    what stands on it carried; 0.5: its middle, both sides carried outward); "x" (width) or
    "whole" (size): each piece's `axes` scaled about its `centres`, a point belonging to the
    piece of its nearest source sample (`samples`, `piece`: -1 where nothing moves). Pieces past
    the part's own are what it carries (`carried_pieces`): each one's middle moved as its part
    piece's scale moves it (along `moves`, about `anchors`, that piece's middle), and scaled
    with it along the `axes` it spans."""
    extent: str
    factor: float
    axis: int
    anchor: float
    span: tuple[float, float]
    samples: np.ndarray = field(repr=False)
    piece: np.ndarray = field(repr=False)
    centres: np.ndarray = field(repr=False)
    axes: np.ndarray = field(repr=False)          # (P, 3) bool
    anchors: np.ndarray = field(repr=False)       # (P, 3)
    moves: np.ndarray = field(repr=False)         # (P, 3) bool

    def apply(self, points: np.ndarray, piece: np.ndarray | None = None) -> np.ndarray:
        """Points (N, 3) -> moved; `piece` (N,) the points' pieces when known (the samples' own)."""
        points = np.asarray(points, np.float32)
        out = points.copy()
        f = self.factor
        if self.extent in ("z", "long"):
            lo, hi = self.span
            mid = lo + self.anchor * (hi - lo)
            x = points[:, self.axis]
            out[:, self.axis] = np.where(x < lo, x + (f - 1) * (lo - mid),
                                         np.where(x > hi, x + (f - 1) * (hi - mid), mid + (x - mid) * f))
            return out
        if piece is None:
            piece = self.piece[cKDTree(self.samples).query(points)[1]]
        inside = piece >= 0
        k = piece[inside]
        scale = np.where(self.axes[k], f, 1.0).astype(np.float32)
        move = np.where(self.moves[k], f, 1.0).astype(np.float32)
        centre, anchor = self.centres[k], self.anchors[k]
        out[inside] = (points[inside] - centre) * scale + anchor + (centre - anchor) * move
        return out

    def at(self, factor: float) -> "PartRescale":
        return replace(self, factor=factor)


def carried_pieces(points: np.ndarray, piece: np.ndarray, axes: np.ndarray,
                   cfg: "PartResizeConfig") -> list[tuple[np.ndarray, int, np.ndarray]]:
    """What a part's pieces (`piece` (N,), -1 off the part; their scaled `axes` (P, 3)) carry
    when scaled across: the asset's other connected groups of samples that touch one piece only
    and stand within its footprint (a seat's legs and back; not a car's body, touching four
    wheels, nor a house's walls round its door), as (the group's sample indices, the piece, the
    horizontal axes the group spans, touching the piece all along: scaled with the piece there,
    moved elsewhere). The procedural world builds a narrower seat with its legs under its
    corners and its back as wide as it; the seat narrowed alone is a change the autoencoder
    hardly shows."""
    rest, on_part = np.flatnonzero(piece < 0), np.flatnonzero(piece >= 0)
    if not len(rest) or not len(on_part):
        return []
    groups = pieces(points[rest], cfg.link)
    near = cKDTree(points[on_part]).query(points[rest], distance_upper_bound=cfg.link)[1]
    hit = near < len(on_part)
    touching = np.full(len(rest), -1, np.int64)
    touching[hit] = piece[on_part[near[hit]]]
    out = []
    for g in range(int(groups.max()) + 1):
        members = groups == g
        touched = np.unique(touching[members & hit])
        if len(touched) != 1:
            continue
        k = int(touched[0])
        own, group, contact = points[piece == k], points[rest[members]], points[rest[members & hit]]
        lo, hi = own.min(0), own.max(0)
        if (group[:, :2].min(0) < lo[:2] - cfg.link).any() or (group[:, :2].max(0) > hi[:2] + cfg.link).any():
            continue
        # joined along the piece's whole edge (a chair's back), not through a post (a lamp's pole)
        spans = (contact.max(0) - contact.min(0)) >= cfg.spans * (hi - lo)
        out.append((rest[members], k, axes[k] & spans & HORIZONTAL))
    return out


def part_rescale(points: np.ndarray, part: np.ndarray, way: str, weight: float,
                 cfg: PartResizeConfig = PartResizeConfig()) -> PartRescale:
    """Surface samples (N, 3), which of them are the part (N,) bool, a resize way (one of
    kinds.RESIZES: its extent whole / z / x / long, its direction) and how far -> the PartRescale."""
    if way not in RESIZES:
        raise ValueError(f"unknown resize {way!r}: one of {RESIZES}")
    extent, direction = way.split("_")
    factor = FACTOR["part"] ** (weight if direction == "up" else -weight)
    piece = part_pieces(points, part, cfg.link, cfg.min_piece, cfg.min_copy)
    n = int(piece.max()) + 1
    centres = np.zeros((n, 3), np.float32)
    axes = np.zeros((n, 3), bool)
    candidates = np.array([True, True, False]) if extent == "x" else np.ones(3, bool)
    for i in range(n):
        p = points[piece == i]
        lo, hi = p.min(0), p.max(0)
        centres[i] = (lo + hi) / 2
        size = np.where(candidates, hi - lo, 0.0)
        axes[i] = candidates & (size >= LARGE_EXTENT * size.max())
    own = points[piece >= 0] if (piece >= 0).any() else points[part]
    q = cfg.span_quantile
    lo, hi = np.quantile(own, q, axis=0), np.quantile(own, 1 - q, axis=0)
    axis, anchor = 2, 0.0
    if extent == "long" and max(hi[:2] - lo[:2]) > cfg.lying * (hi[2] - lo[2]):
        axis, anchor = int(np.argmax(hi[:2] - lo[:2])), 0.5
    anchors, moves = centres.copy(), axes.copy()
    if extent in ("x", "whole"):
        # what the part's pieces carry across, numbered after them
        piece = piece.copy()
        for members, k, spanned in carried_pieces(points, piece, axes, cfg):
            piece[members] = len(centres)
            carried = points[members]
            centres = np.concatenate([centres, ((carried.min(0) + carried.max(0)) / 2)[None]])
            anchors = np.concatenate([anchors, anchors[k][None]])
            axes = np.concatenate([axes, spanned[None]])
            moves = np.concatenate([moves, (moves[k] & HORIZONTAL)[None]])
    return PartRescale(extent, float(factor), axis, anchor, (float(lo[axis]), float(hi[axis])),
                       points.astype(np.float32), piece, centres.astype(np.float32), axes, anchors.astype(np.float32),
                       moves)


def fitted_part(points: np.ndarray, rescale: PartRescale, limit: float) -> tuple[PartRescale, bool]:
    """The rescale, its factor's log shrunk so that the moved samples fit (`resize.fitted_share`);
    (rescale, whether it was shrunk)."""
    share = fitted_share(points, lambda s: rescale.at(rescale.factor ** s).apply(points, rescale.piece), limit)
    return (rescale, False) if share == 1.0 else (rescale.at(rescale.factor ** share), True)


@torch.inference_mode()
def grounded_part_resize(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                         mask: torch.Tensor, way: str, weight: float, cfg: PartResizeConfig = PartResizeConfig(),
                         seed: int = 0) -> tuple[torch.Tensor, PartRescale, bool] | None:
    """The source latent (1, ...) and an instruction asking to resize a part -> (the resized
    latent, the rescale made, whether it was shrunk to stay in the cube), or None when the
    grounding network finds no such part on this asset (or all of it)."""
    marked = marked_part(ae, model, latent, tokens, mask, cfg, seed)
    if marked is None:
        return None
    pts, rgb, part = marked
    rescale, shrunk = fitted_part(pts, part_rescale(pts, part, way, weight, cfg), cfg.limit)
    cloud = np.concatenate([pts, rgb], 1).astype(np.float32)
    moved = np.concatenate([rescale.apply(pts, rescale.piece), rgb], 1).astype(np.float32)
    return latent + encoded_delta(ae, moved, cloud), rescale, shrunk
