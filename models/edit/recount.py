"""Changing how many of a repeated part an asset has, grounded on the asset and made on its
decoded surface.

The flow model learned "give it four fins" per category from the pairs it saw; on a rocket, a
combination it never trained on, it moved nothing (held-out rocket fin counts: 0 of 8), and a
table's six legs went a third of the way. A repeated part is laid out the same few ways on any
asset, so once the grounding network (`grounding.py`) marks the part's samples on the decoded
surface, the samples fall into pieces (one per leg, fin or wheel) and their layout says where
the asked number of them go:

  ring  pieces at one distance from the asset's vertical axis and evenly spaced around it (a
        rocket's fins, a stool's legs): the new ring keeps one piece in place and puts copies
        of it, turned about the axis, at equal angles
  rows  pieces in two or more rows along one horizontal axis, the same number in each (a
        table's legs, a car's wheels): each row keeps its two end pieces and spreads the asked
        number evenly between them, copies of its nearest piece (rows spread so must be evenly
        spaced already; rows cut to their ends need not be: a six-wheeled car's)

Where both fit (four legs under a square seat), the layout keeping more pieces in place. The
count is read by the kind reader's count head (`kinds.COUNTS`). Pieces the new layout does not
reuse are cut out of the shown field, as a removed part is (`removal.PartCut`), and the new
copies are encoded onto the latent as a delta, as a part resize's moved samples are; strength
scales both (below 1 the dropped pieces thin and the new ones come in part). Layouts
that are neither (a tree's tiers overlap into one piece, a house's windows sit in a wall) are
left to the flow model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.inference import encoded_delta
from .grounding import PartGrounding
from .part_resize import part_pieces
from .removal import PartCut, marked_part


@dataclass(frozen=True)
class RecountConfig:
    points: int = 8192            # surface samples of the source's decoded field (as a recolour's)
    mc_res: int = 64
    part_threshold: float = 0.5
    min_share: float = 0.002
    max_share: float = 0.6        # a repeated part is never most of the asset
    link: float = 0.08            # as PartResizeConfig.link: a stool's legs are 0.2+ apart
    min_piece: float = 0.05       # as PartResizeConfig.min_piece
    # as PartResizeConfig.min_copy: a rocket's body marked beside its back fin, 76 samples against
    # the fins' 333-452
    min_copy: float = 0.4
    # a piece this many times the smallest one's samples, and as stretched, is copies touching
    # (`split_joined`): a six-wheeled car's joined wheels hold 1.9-2.1 times a lone wheel's
    joined: float = 1.6
    # a ring: the pieces' distances from the axis within this share of their mean, and the
    # angles between neighbours within this share of an even spacing (a car's four wheels sit
    # at one distance from its middle too, at angles 20-25% off even)
    ring_spread: float = 0.2
    ring_gap: float = 0.12
    # rows: a piece's offset across the rows within this distance of its row's, and its place
    # along the row within this share of an even spacing
    row_tolerance: float = 0.06
    row_gap: float = 0.25
    # a new ring within this angle (radians, ~6 degrees) of its mirror image counts as symmetric:
    # pieces' centres are read from decoded samples a degree or two off their true angles
    mirror_tolerance: float = 0.1
    max_count: int = 12           # counts asked beyond this are left to the flow model


@dataclass
class Layout:
    """Where the pieces of a repeated part go: for each new piece, the source piece it copies and
    the map from that piece's samples to its new place (points (N, 3) -> (N, 3)); `kept` the
    source pieces left where they are."""
    kind: str                                   # "ring" or "rows"
    copies: list[tuple[int, "PieceMove"]]
    kept: list[int]


@dataclass(frozen=True)
class PieceMove:
    """A rigid move of a piece: turned by `angle` about the vertical axis through `axis` (x, y),
    then shifted by `shift`."""
    axis: tuple[float, float]
    angle: float = 0.0
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def apply(self, points: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        out = points.astype(np.float32).copy()
        x, y = points[:, 0] - self.axis[0], points[:, 1] - self.axis[1]
        out[:, 0] = self.axis[0] + c * x - s * y
        out[:, 1] = self.axis[1] + s * x + c * y
        return out + np.asarray(self.shift, np.float32)


def piece_labels(points: np.ndarray, part: np.ndarray, cfg: RecountConfig) -> np.ndarray:
    """(N,) piece of each sample, -1 off the part or on a stray piece (`part_resize.part_pieces`),
    with pieces that are copies touching split apart (`split_joined`)."""
    return split_joined(points, part_pieces(points, part, cfg.link, cfg.min_piece, cfg.min_copy), cfg.joined)


def split_joined(points: np.ndarray, piece: np.ndarray, joined: float) -> np.ndarray:
    """Pieces (N,) with each piece that holds `joined` or more times the smallest piece's samples
    and is that many times its length along its own longest horizontal direction (and no wider
    across it) split into that many along that direction, at equal shares of its samples. A
    repeated part's pieces are copies of one another, and copies closer than the samples'
    linking distance join: a six-wheeled car's middle and back wheels, 0.04 apart, read as one
    piece each side, so its six wheels read as four and "four wheels" changed nothing. Lengths
    are taken in each piece's own frame, so a ring's pieces, turned copies, compare alike."""
    n = int(piece.max()) + 1 if (piece >= 0).any() else 0
    if n < 2:
        return piece
    sizes = np.bincount(piece[piece >= 0], minlength=n)
    frames = [footprint(points[piece == i, :2]) for i in range(n)]
    unit = int(sizes.argmin())
    out, next_label = piece.copy(), n
    for i in np.flatnonzero(sizes >= joined * sizes[unit]):
        copies = int(round(sizes[i] / sizes[unit]))
        direction, lengths = frames[i]
        stretch = lengths / np.maximum(frames[unit][1], 1e-6)
        if stretch[0] < copies - 0.5 or stretch[1] > 1.5:
            continue
        sel = np.flatnonzero(piece == i)
        along = points[sel, :2] @ direction
        share = np.searchsorted(np.quantile(along, np.arange(1, copies) / copies), along)
        out[sel[share > 0]] = next_label + share[share > 0] - 1
        next_label += copies - 1
    return out


def footprint(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points' horizontal coordinates (N, 2) -> (their longest direction (2,), their lengths along
    it and across it (2,))."""
    centred = xy - xy.mean(0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0] if len(xy) > 1 else np.array([1.0, 0.0])
    across = np.array([-direction[1], direction[0]])
    return direction, np.array([np.ptp(centred @ direction), np.ptp(centred @ across)])


def wrapped(angle):
    """Angles (radians) wrapped into [-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(angle)))


def ring_layout(centres: np.ndarray, axis: np.ndarray, count: int, cfg: RecountConfig) -> Layout | None:
    """Pieces' centres (P, 2) about the vertical axis at `axis` (2,) -> the ring of `count`, or None
    when the pieces are not a ring. The piece kept in place is the one that leaves the new ring
    mirror-symmetric left to right (Kiln's assets face the Front view, -Y), nearest the back (+Y)
    among those, then the first counter-clockwise from +X: the procedural world's rings are laid
    out that way."""
    n = len(centres)
    offset = centres - axis
    radius = np.linalg.norm(offset, axis=1)
    if n < 3 or radius.mean() < 1e-3 or radius.std() > cfg.ring_spread * radius.mean():
        return None
    angle = np.arctan2(offset[:, 1], offset[:, 0])
    gaps = np.diff(np.sort(angle), append=np.sort(angle)[0] + 2 * np.pi)
    if np.abs(gaps - 2 * np.pi / n).max() > cfg.ring_gap * 2 * np.pi / n:
        return None

    def new_angles(phase: float) -> np.ndarray:
        return phase + 2 * np.pi * np.arange(count) / count

    def mirror_error(phase: float) -> float:
        a = new_angles(phase)
        mirrored = np.pi - a
        return float(np.abs(wrapped(mirrored[:, None] - a[None])).min(1).max())

    def from_back(phase: float) -> float:
        return float(abs(wrapped(phase - np.pi / 2)))

    keep = min(range(n), key=lambda i: (mirror_error(angle[i]) > cfg.mirror_tolerance, round(from_back(angle[i]), 2),
                                        round(float(angle[i] % (2 * np.pi)), 2)))
    targets = new_angles(angle[keep])
    copies, kept = [], []
    for target in targets:
        # a source piece already at this angle stays; otherwise the kept piece is turned there
        diff = np.abs(wrapped(angle - target))
        there = int(diff.argmin())
        if diff[there] < 0.25 * np.pi / max(n, count):
            kept.append(there)
        else:
            copies.append((keep, PieceMove(tuple(axis), float(target - angle[keep]))))
    return Layout("ring", copies, kept)


def rows_layout(centres: np.ndarray, count: int, cfg: RecountConfig) -> Layout | None:
    """Pieces' centres (P, 2) -> `count` pieces in the same rows, or None when the pieces are not
    two or more even rows of two or more, or `count` does not share out over the rows."""
    n = len(centres)
    if n < 4:
        return None
    spread = centres.max(0) - centres.min(0)
    along = int(np.argmax(spread))
    across = 1 - along
    order = np.argsort(centres[:, across])
    rows, current = [], [order[0]]
    for i in order[1:]:
        if centres[i, across] - centres[current[-1], across] < cfg.row_tolerance:
            current.append(i)
        else:
            rows.append(current)
            current = [i]
    rows.append(current)
    per_row = {len(r) for r in rows}
    if len(rows) < 2 or len(per_row) != 1 or per_row.pop() < 2 or count % len(rows) or count // len(rows) < 2:
        return None
    copies, kept = [], []
    for row in rows:
        row = sorted(row, key=lambda i: centres[i, along])
        places = centres[row, along]
        length = places[-1] - places[0]
        even = np.linspace(places[0], places[-1], len(row))
        # rows cut to their two ends need no even spacing (a six-wheeled car's middle wheels sit
        # near its back ones; four keep the end wheels); rows spread between them do
        if length <= 0 or (count // len(rows) > 2
                           and np.abs(places - even).max() > cfg.row_gap * length / (len(row) - 1)):
            return None
        for place in np.linspace(places[0], places[-1], count // len(rows)):
            nearest = row[int(np.abs(places - place).argmin())]
            if abs(centres[nearest, along] - place) < 0.25 * length / max(len(row), count // len(rows)):
                kept.append(nearest)
            else:
                shift = [0.0, 0.0, 0.0]
                shift[along] = float(place - centres[nearest, along])
                copies.append((nearest, PieceMove((0.0, 0.0), 0.0, tuple(shift))))
    return Layout("rows", copies, kept)


def recount_layout(points: np.ndarray, piece: np.ndarray, count: int, cfg: RecountConfig) -> Layout | None:
    """Surface samples (N, 3) and their pieces (N,) -> the layout of `count` pieces, or None (for
    the count the pieces already have: every piece kept, no copies)."""
    n = int(piece.max()) + 1 if (piece >= 0).any() else 0
    if n < 2 or not 1 <= count <= cfg.max_count:
        return None
    centres = np.stack([(points[piece == i].min(0) + points[piece == i].max(0)) / 2 for i in range(n)])
    rest = points[piece < 0]
    axis = (rest.min(0)[:2] + rest.max(0)[:2]) / 2 if len(rest) else centres[:, :2].mean(0)
    # where both fit (four legs under a square seat are a ring and two rows), the layout that
    # keeps more of the source's pieces in place: six legs as two rows of three keep all four
    layouts = [lay for lay in (ring_layout(centres[:, :2], axis, count, cfg), rows_layout(centres[:, :2], count, cfg))
               if lay is not None]
    return max(layouts, key=lambda lay: len(lay.kept), default=None)


def recounted_clouds(points: np.ndarray, rgb: np.ndarray, piece: np.ndarray,
                     layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The source's samples with the layout made: (new cloud (M, 6), samples of the pieces it drops
    (K, 3))."""
    dropped = (piece >= 0) & ~np.isin(piece, sorted(set(layout.kept)))
    keep = ~dropped
    parts = [np.concatenate([points[keep], rgb[keep]], 1)]
    for source, move in layout.copies:
        sel = piece == source
        parts.append(np.concatenate([move.apply(points[sel]), rgb[sel]], 1))
    return np.concatenate(parts).astype(np.float32), points[dropped]


@torch.inference_mode()
def grounded_recount(ae: TriplaneAutoencoder, model: PartGrounding, latent: torch.Tensor, tokens: torch.Tensor,
                     mask: torch.Tensor, count: int, weight: float, cfg: RecountConfig = RecountConfig(),
                     seed: int = 0) -> tuple[torch.Tensor, PartCut | None, bool] | None:
    """The source latent (1, ...) and an instruction asking for `count` of a part -> (the latent
    with the new pieces encoded as a delta, the cut that drops the pieces no longer there,
    whether the part already had `count` pieces: then the source is returned as it was), or None
    when the grounding network marks no repeated part whose layout is a ring or rows."""
    marked = marked_part(ae, model, latent, tokens, mask, cfg, seed)
    if marked is None:
        return None
    pts, rgb, part = marked
    piece = piece_labels(pts, part, cfg)
    layout = recount_layout(pts, piece, count, cfg)
    if layout is None:
        return None
    if not layout.copies and len(layout.kept) == int(piece.max()) + 1:
        return latent.clone(), None, True   # a ring or rows of `count` already
    cloud, dropped = recounted_clouds(pts, rgb, piece, layout)
    source = np.concatenate([pts, rgb], 1).astype(np.float32)
    edited = latent + weight * encoded_delta(ae, cloud, source)
    cut = PartCut(dropped, cloud[:, :3], weight) if len(dropped) else None
    return edited, cut, False
