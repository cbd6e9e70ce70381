"""Exact before/after edit pairs with instructions.

An edit is an operation on an AssetSpec, so the "after" asset is exact: recolour
(all or one part), resize (whole, one axis, one part), add/remove an optional
part, change a count, add/remove a pattern. Instructions come from train or
held-out phrasings; some (edit kind, category) combinations are held out.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .asset import Asset, AssetSpec
from .captions import COLOUR_WORDS, choose, number_word, word_choices
from .palette import COLOUR_NAMES, PATTERNS
from .split import allowed_colour

EDIT_KINDS = ("recolour_all", "recolour_part", "resize_whole", "resize_axis", "resize_part",
              "add_part", "remove_part", "change_count", "add_pattern", "remove_pattern")

HELDOUT_EDIT_COMBOS = frozenset({
    ("resize_part", "lamp"), ("remove_part", "car"), ("recolour_part", "house"),
    ("change_count", "rocket"), ("add_pattern", "mug"), ("resize_axis", "bottle"),
})

# kind -> phrasing -> templates
INSTRUCTIONS = {
    "recolour_all": {"train": ("make it {c}", "paint it {c}", "change the colour to {c}", "turn it {c}",
                               "recolor it {c}", "make the whole thing {c}", "change its color to {c}",
                               "repaint it in {c}", "make it all {c}"),
                     "heldout": ("i'd like it in {c}", "give it a {c} finish", "colour the whole thing {c}")},
    "recolour_part": {"train": ("make the {part} {c}", "paint the {part} {c}", "change the {part} to {c}",
                                "turn the {part} {c}", "recolor the {part} {c}", "recolour the {part} in {c}",
                                "change the colour of the {part} to {c}", "{c} {part}"),
                      "heldout": ("the {part} should be {c}", "give the {part} a {c} colour")},
    "resize_whole": {"train": ("make it {bigger}", "scale it {up}", "make the whole thing {bigger}",
                               "make it a bit {bigger}", "scale the whole asset {up}", "{bigger} overall please"),
                     "heldout": ("i want it {bigger} overall", "resize it to be {bigger}")},
    "resize_axis": {"train": ("make it {taller}", "make the {noun} {taller}", "stretch it to be {taller}",
                              "make it a little {taller}", "change it to be {taller}", "{taller} please"),
                    "heldout": ("it should be {taller}", "can you make it {taller}")},
    "resize_part": {"train": ("make the {part} {longer}", "make the {part} a bit {longer}", "{longer} {part}",
                              "the {part}, but {longer}", "change the {part} to be {longer}"),
                    "heldout": ("the {part} should be {longer}", "give it {longer} {part}")},
    "add_part": {"train": ("add {a_part}", "give it {a_part}", "put {a_part} on it", "include {a_part}",
                           "fit it with {a_part}", "with {a_part}"),
                 "heldout": ("it needs {a_part}", "attach {a_part}")},
    "remove_part": {"train": ("remove the {part}", "take off the {part}", "delete the {part}", "no {part}",
                              "take away the {part}", "i don't want the {part}", "drop the {part}"),
                    "heldout": ("get rid of the {part}", "without the {part}")},
    "change_count": {"train": ("give it {n} {part}", "make it have {n} {part}", "use {n} {part}",
                               "{n} {part} instead", "set the number of {part} to {n}", "{n} {part} please"),
                     "heldout": ("it should have {n} {part}", "change it to {n} {part}")},
    "add_pattern": {"train": ("add {pattern} to the {part}", "give the {part} {pattern}",
                              "decorate the {part} with {pattern}", "put {pattern} on the {part}",
                              "pattern the {part} with {pattern}", "paint {pattern} on the {part}"),
                    "heldout": ("cover the {part} in {pattern}", "i want {pattern} on the {part}")},
    "remove_pattern": {"train": ("remove the pattern", "make the {part} plain", "remove the {pname} from the {part}",
                                 "take the {pname} off", "plain {part} please", "delete the {pname}"),
                       "heldout": ("no more {pname}", "clear the {part} pattern")},
}
PATTERN_PHRASE = {"stripes": ("{c} stripes", "stripes"), "checker": ("a {c} checker pattern", "checks"),
                  "dots": ("{c} polka dots", "dots")}
RESIZE_WORDS = {
    "whole": {1: {"bigger": "bigger", "up": "up"}, -1: {"bigger": "smaller", "up": "down"}},
    "z": {1: "taller", -1: "shorter"}, "x": {1: "wider", -1: "narrower"},
}
FACTOR = {"whole": 1.25, "axis": 1.3, "part": 1.35}


@dataclass
class EditPair:
    kind: str
    instruction: str
    before: AssetSpec
    after: AssetSpec
    details: dict = field(default_factory=dict)  # what changed: part, colour, axis, direction, ...
    words: dict = field(default_factory=dict)    # the template's fields: colour word, part noun, ...

    def phrasings(self, phrasing: str = "train") -> list[str]:
        """Every template of this edit's kind filled with the same words (training augmentation)."""
        return [t.format(**self.words) for t in INSTRUCTIONS[self.kind][phrasing]]


def _scaled(spec: AssetSpec, factors) -> AssetSpec:
    out = spec.copy()
    out.scale = tuple(float(s * f) for s, f in zip(spec.scale, factors))
    return out


def _candidates(spec: AssetSpec, rng, split: str):
    """All (kind, builder) edits applicable to `spec`; builder(phrasing) -> EditPair | None."""
    cat, parts = spec.cat, spec.parts()
    colours = [c for c in COLOUR_NAMES if allowed_colour(cat.name, c, split)]
    out = []

    def recolour_all(ph):
        c = choose(rng, [c for c in colours if any(spec.colours[p] != c for p in parts)])
        after = spec.copy()
        after.colours = {p: c for p in parts}
        return {"colour": c}, after, {"c": choose(rng, word_choices(COLOUR_WORDS, c, ph))}

    def recolour_part(ph):
        part = choose(rng, parts)
        c = choose(rng, [c for c in colours if c != spec.colours[part]])
        after = spec.copy()
        after.colours[part] = c
        return {"part": part, "colour": c}, after, {"c": choose(rng, word_choices(COLOUR_WORDS, c, ph)), "part": cat.noun_for(part)}

    def resize_whole(ph):
        d = int(choose(rng, (1, -1)))
        f = FACTOR["whole"] ** d
        return {"direction": d, "factor": f}, _scaled(spec, (f, f, f)), RESIZE_WORDS["whole"][d]

    def resize_axis(ph):
        axis, d = choose(rng, ("z", "z", "x")), int(choose(rng, (1, -1)))
        f = FACTOR["axis"] ** d
        factors = (f, 1, 1) if axis == "x" else (1, 1, f)
        return {"axis": axis, "direction": d, "factor": f}, _scaled(spec, factors), \
            {"taller": RESIZE_WORDS[axis][d], "noun": choose(rng, cat.nouns)}

    def resize_part(ph):
        part = choose(rng, [p for p in cat.part_sizes if p in parts])
        param, up, down = cat.part_sizes[part]
        d = int(choose(rng, (1, -1)))
        after = spec.copy()
        after.params[param] = spec.params[param] * FACTOR["part"] ** d
        return {"part": part, "param": param, "direction": d}, after, \
            {"part": cat.noun_for(part), "longer": up if d > 0 else down}

    def add_or_remove(add):
        def build(ph):
            opts = [p for p, prm in cat.optional_parts.items() if bool(spec.params[prm]) != add]
            part = choose(rng, opts)
            after = spec.copy()
            after.params[cat.optional_parts[part]] = add
            if add:
                after.colours[part] = spec.main_colour()
            else:
                after.colours.pop(part, None)
                after.patterns.pop(part, None)
            noun = cat.noun_for(part)
            return {"part": part}, after, {"part": noun, "a_part": noun if noun.endswith("s") else
                                           ("an " if noun[0] in "aeiou" else "a ") + noun}
        return build

    def change_count(ph):
        counted = choose(rng, [c for c in cat.counts if cat.count_of(c, spec.params)])
        param = cat.counts[counted][0]
        choices = sorted(set(cat.param_by_name[param].choices) - {spec.params[param]} - {0})
        n = int(choose(rng, choices))
        after = spec.copy()
        after.params[param] = n
        for p in after.parts():
            after.colours.setdefault(p, spec.main_colour())
        noun = cat.noun_for(counted)
        return {"part": counted, "count": n, "from": spec.params[param]}, after, \
            {"n": number_word(n), "part": noun if n > 1 else noun.rstrip("s")}

    def add_pattern(ph):
        part = choose(rng, [p for p in cat.pattern_parts if p in parts and p not in spec.patterns])
        pattern = choose(rng, PATTERNS[1:])
        c = choose(rng, [c for c in colours if c != spec.colours[part]])
        after = spec.copy()
        after.patterns[part] = (pattern, c)
        phrase = PATTERN_PHRASE[pattern][0].format(c=choose(rng, word_choices(COLOUR_WORDS, c, ph)))
        return {"part": part, "pattern": pattern, "colour": c}, after, {"part": cat.noun_for(part), "pattern": phrase}

    def remove_pattern(ph):
        part = choose(rng, list(spec.patterns))
        after = spec.copy()
        pattern = after.patterns.pop(part)[0]
        return {"part": part, "pattern": pattern}, after, {"part": cat.noun_for(part), "pname": PATTERN_PHRASE[pattern][1]}

    out += [("recolour_all", recolour_all), ("recolour_part", recolour_part) if len(parts) > 1 else None,
            ("resize_whole", resize_whole), ("resize_axis", resize_axis),
            ("resize_part", resize_part) if any(p in parts for p in cat.part_sizes) else None,
            ("add_part", add_or_remove(True)) if any(not spec.params[p] for p in cat.optional_parts.values()) else None,
            ("remove_part", add_or_remove(False)) if any(spec.params[p] for p in cat.optional_parts.values()) else None,
            ("change_count", change_count) if any(cat.count_of(c, spec.params) for c in cat.counts) else None,
            ("add_pattern", add_pattern) if any(p in parts and p not in spec.patterns for p in cat.pattern_parts) else None,
            ("remove_pattern", remove_pattern) if spec.patterns else None]
    return [c for c in out if c is not None]


def sample_edit(spec: AssetSpec, rng: np.random.Generator, split: str = "train", phrasing: str = "train",
                kind: str | None = None) -> EditPair | None:
    """A random valid edit of `spec` (or of the given kind); None when no such edit applies."""
    cands = [c for c in _candidates(spec, rng, split)
             if (kind is None or c[0] == kind) and (split != "train" or (c[0], spec.category) not in HELDOUT_EDIT_COMBOS)]
    for _ in range(8):
        if not cands:
            return None
        k, build = cands[int(rng.integers(len(cands)))]
        details, after, words = build(phrasing)
        if after.to_dict() == spec.to_dict() or not Asset(after).fits():
            continue
        template = choose(rng, INSTRUCTIONS[k][phrasing])
        return EditPair(k, template.format(**words), spec, after, details, words)
    return None
