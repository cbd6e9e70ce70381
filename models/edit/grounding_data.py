"""Examples for the part grounding network, from the procedural world's exact edits.

An example is one asset, one edit of it and its instruction: the edit's kind (recolour all,
recolour a part, add a pattern, remove a pattern, other), the colour it asks for, which surface
points it paints (a part from the asset's own part labels, all of it, or a pattern's points on
a part) and which part it is about. Edits that name a part without painting it (make the legs
longer, remove the armrests, give it four fins) still say where the part is, so they label the
region too: more examples of each part noun, and the part a removal, a part resize or a count
change acts on (models/edit/removal.py, part_resize.py, recount.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..world.asset import Asset, AssetSpec
from ..world.captions import (
    COLOUR_WORDS,
    COLOURED,
    HELD_OUT_COLOUR_WORDS,
    PART_CONNECT,
    TEMPLATES,
    choose,
    part_phrase,
    with_article,
)
from ..world.categories import CATEGORIES
from ..world.edits import INSTRUCTIONS, EditPair
from ..world.palette import COLOURS, PATTERNS
from .grounding import GROUNDED_KINDS

WHOLE = "*"
# kinds whose details name a part of the *source* asset (a count change: the part it repeats)
PART_KINDS = ("recolour_part", "add_pattern", "remove_pattern", "remove_part", "resize_part", "change_count")
RECOLOURS = ("recolour_all", "recolour_part")


@dataclass(frozen=True)
class GroundingTarget:
    kind: int                     # index into GROUNDED_KINDS
    part: str | None              # the addressed part, WHOLE, or None (no region to label)
    colour: tuple | None          # RGB the instruction asks for (recolours, an added pattern's colour)
    pattern: str | None = None    # the pattern an add_pattern edit paints

    @property
    def kind_name(self) -> str:
        return GROUNDED_KINDS[self.kind]


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


def part_captions(spec: AssetSpec, rng: np.random.Generator) -> list[tuple[GroundingTarget, list[str]]]:
    """Descriptions of the asset naming one of its parts by its own colour, as the text model's
    training captions do ("a 3d model of a white cottage with a teal roof"): the part as the
    region, its colour as the colour asked, kind "other" (a description is no edit), in every
    training caption template. Edits never name some parts (a house's roof and door:
    recolouring a house's part is a held-out combination), captions of training assets do; only
    training templates and colour words. One description names an accent part (off the main
    colour), one a part in the main colour ("a mug with a white body"), where the asset has
    them: named only by its accents, the network learnt to mark the off-colour part whatever was
    asked (a mug's red handle half marked for "add blue stripes to the body"). Patterned parts
    are never named. (Without the colour target the house's parts were found as well, and the
    edits came out worse: models/cards/grounding.md, version 4.)"""
    cat, main = spec.cat, spec.main_colour()
    plain = [p for p in spec.parts() if p not in spec.patterns]
    out = []
    for accent in (True, False):
        parts = [p for p in plain if (spec.colours[p] != main) == accent]
        if not parts:
            continue
        part = choose(rng, parts)
        desc = part_phrase(f"{choose(rng, COLOUR_WORDS[spec.colours[part]][0])} {cat.noun_for(part)}")
        noun = choose(rng, cat.nouns)
        core = choose(rng, COLOURED["train"]).format(c=choose(rng, COLOUR_WORDS[main][0]), noun=noun) if accent else noun
        texts = [t.format(np=with_article(core), parts=choose(rng, PART_CONNECT["train"]).format(desc=desc))
                 for t in TEMPLATES["train"]]
        out.append((GroundingTarget(GROUNDED_KINDS.index("other"), part, COLOURS[spec.colours[part]]), texts))
    return out


def grounding_target(pair: EditPair) -> GroundingTarget:
    kind = pair.kind if pair.kind in GROUNDED_KINDS else "other"
    if pair.kind == "recolour_all":
        part = WHOLE
    elif pair.kind in PART_KINDS and named_part(pair) in pair.before.parts():
        part = named_part(pair)
    else:
        part = None
    colour = COLOURS[pair.details["colour"]] if pair.kind in (*RECOLOURS, "add_pattern") else None
    pattern = pair.details["pattern"] if pair.kind == "add_pattern" else None
    return GroundingTarget(GROUNDED_KINDS.index(kind), part, colour, pattern)


def named_part(pair: EditPair) -> str | None:
    """The part of the source an edit is about: for a count change the part that builds what is
    counted (a tree's tiers are its foliage)."""
    part = pair.details.get("part")
    if pair.kind == "change_count":
        return CATEGORIES[pair.before.category].counts[part][1]
    return part


@dataclass(frozen=True)
class PointLabels:
    part: np.ndarray        # (N,) int8 index into `names` of each point's part
    names: list[str]
    patterned: np.ndarray   # (N,) bool: painted with its part's pattern colour, not the part's own
    pattern_masks: np.ndarray  # (N, 3) bool: painted by stripes / checker / dots if its part had them

    def __getitem__(self, index) -> "PointLabels":
        """The labels of a subset of the points."""
        return PointLabels(self.part[index], self.names, self.patterned[index], self.pattern_masks[index])


def point_labels(spec: AssetSpec, points: np.ndarray) -> PointLabels:
    asset = Asset(spec)
    return PointLabels(asset.part_labels(points).astype(np.int8), list(asset.part_names), asset.pattern_points(points),
                       asset.pattern_masks(points))


def region_labels(target: GroundingTarget, labels: PointLabels) -> np.ndarray | None:
    """(N,) float 0/1: the points the edit addresses; None when it names no region. A recolour
    paints a part's own colour and leaves its pattern's colour as it was (the procedural world's
    recolour keeps patterns), so pattern points are not in a recolour's region; adding a pattern
    paints the points it covers on the part, removing one the points it covered."""
    region = part_labels(target, labels)
    if region is None:
        return None
    region = region > 0.5
    if target.kind_name in RECOLOURS:
        region &= ~labels.patterned
    elif target.kind_name == "add_pattern":
        region &= labels.pattern_masks[:, PATTERNS.index(target.pattern) - 1]
    elif target.kind_name == "remove_pattern":
        region &= labels.patterned
    return region.astype(np.float32)


def part_labels(target: GroundingTarget, labels: PointLabels) -> np.ndarray | None:
    """(N,) float 0/1: the points of the part the edit is about (all of them for a whole-asset
    edit); None when it names no part."""
    if target.part is None:
        return None
    if target.part == WHOLE:
        return np.ones(len(labels.part), np.float32)
    return (labels.part == labels.names.index(target.part)).astype(np.float32)
