"""Examples for the part grounding network, from the procedural world's exact edits.

An example is one asset, one edit of it and its instruction: the edit's kind (recolour all,
recolour a part, other), the colour it asks for, and which surface points it addresses (a part
from the asset's own part labels, or all of it). Edits that name a part without recolouring it
(add a pattern to the handle, make the legs longer, remove the armrests) still say where the
part is, so they label the region too: more examples of each part noun.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..world.asset import Asset, AssetSpec
from ..world.captions import COLOUR_WORDS, HELD_OUT_COLOUR_WORDS
from ..world.edits import INSTRUCTIONS, EditPair
from ..world.palette import COLOURS
from .grounding import GROUNDED_KINDS

WHOLE = "*"
# kinds whose details name a part of the *source* asset
PART_KINDS = ("recolour_part", "add_pattern", "remove_pattern", "remove_part", "resize_part")


@dataclass(frozen=True)
class GroundingTarget:
    kind: int                     # index into GROUNDED_KINDS
    part: str | None              # the addressed part, WHOLE, or None (no region to label)
    colour: tuple | None          # RGB the instruction asks for (recolours only)


LEXICON = os.path.join(os.path.dirname(os.path.dirname(__file__)), "world", "colour_names.tsv")


def colour_lexicon(path: str = LEXICON) -> dict[str, tuple[float, float, float]]:
    """Colour names -> RGB in [0, 1] for training (the xkcd colour survey's 949 names), less every
    name holding a held-out synonym ("azure", "dark crimson") and the training words themselves,
    which keep the procedural world's palette colours."""
    train_words = {w for train, _ in COLOUR_WORDS.values() for w in train}
    out = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("#") or not line.strip():
                continue
            name, hexcode = line.rstrip("\n").split("\t")
            if name in train_words or any(w in name for w in HELD_OUT_COLOUR_WORDS):
                continue
            out[name] = tuple(int(hexcode[i:i + 2], 16) / 255.0 for i in (1, 3, 5))
    return out


def lexicon_variant(pair: EditPair, name: str, rgb: tuple) -> tuple[GroundingTarget, list[str]]:
    """A recolour pair asked with another colour name: the same region, that name's RGB, every
    training template of the pair's kind filled with it."""
    target = grounding_target(pair)
    words = {**pair.words, "c": name}
    return GroundingTarget(target.kind, target.part, rgb), [t.format(**words) for t in INSTRUCTIONS[pair.kind]["train"]]


def grounding_target(pair: EditPair) -> GroundingTarget:
    kind = pair.kind if pair.kind in GROUNDED_KINDS else "other"
    if pair.kind == "recolour_all":
        part = WHOLE
    elif pair.kind in PART_KINDS and pair.details.get("part") in pair.before.parts():
        part = pair.details["part"]
    else:
        part = None
    colour = COLOURS[pair.details["colour"]] if pair.kind in ("recolour_all", "recolour_part") else None
    return GroundingTarget(GROUNDED_KINDS.index(kind), part, colour)


@dataclass(frozen=True)
class PointLabels:
    part: np.ndarray        # (N,) int8 index into `names` of each point's part
    names: list[str]
    patterned: np.ndarray   # (N,) bool: painted with its part's pattern colour, not the part's own


def point_labels(spec: AssetSpec, points: np.ndarray) -> PointLabels:
    asset = Asset(spec)
    return PointLabels(asset.part_labels(points).astype(np.int8), list(asset.part_names), asset.pattern_points(points))


def region_labels(target: GroundingTarget, labels: PointLabels) -> np.ndarray | None:
    """(N,) float 0/1: the points the edit addresses; None when it names no region. A recolour
    paints a part's own colour and leaves its pattern's colour as it was (the procedural world's
    recolour keeps patterns), so pattern points are not in a recolour's region."""
    if target.part is None:
        return None
    region = np.ones(len(labels.part), bool) if target.part == WHOLE else labels.part == labels.names.index(target.part)
    if target.colour is not None:
        region &= ~labels.patterned
    return region.astype(np.float32)
