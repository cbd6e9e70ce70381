"""Captions for assets, from templates with synonyms and paraphrases.

Phrasings are split: `train` templates/synonyms are used for training; `heldout`
ones only for evaluation (e.g. "a crimson seat", "an armchair coloured scarlet").
"""
from __future__ import annotations

import numpy as np

from .asset import AssetSpec, base_scale

COLOUR_WORDS = {  # colour -> (train synonyms, held-out synonyms); the name itself is a train word
    "red": (("red",), ("crimson", "scarlet")),
    "orange": (("orange",), ("tangerine",)),
    "yellow": (("yellow",), ("golden yellow", "lemon")),
    "green": (("green",), ("emerald",)),
    "teal": (("teal",), ("turquoise",)),
    "blue": (("blue",), ("azure", "cobalt")),
    "purple": (("purple",), ("violet",)),
    "pink": (("pink",), ("rose",)),
    "brown": (("brown",), ("chocolate",)),
    "black": (("black",), ("jet black",)),
    "white": (("white",), ("snow white",)),
    "grey": (("grey", "gray"), ("silver",)),
}
HELD_OUT_COLOUR_WORDS = tuple(w for _, held in COLOUR_WORDS.values() for w in held)
PATTERN_WORDS = {  # pattern -> (train phrases, held-out phrases), {c} is the secondary colour
    "stripes": (("{c} stripes", "{c} striped bands"), ("{c} bands",)),
    "checker": (("a {c} checker pattern", "{c} checks"), ("a {c} chequered pattern",)),
    "dots": (("{c} polka dots", "{c} dots"), ("{c} spots",)),
}
SIZE_WORDS = {"small": (("small", "little"), ("tiny",)), "large": (("large", "big"), ("huge",)),
              "tall": (("tall",), ("lofty",)), "short": (("short",), ("squat",))}

# {a} is the article-aware adjective+noun phrase; {parts} the part descriptions
TEMPLATES = {
    "train": ("{np}{parts}", "a 3d model of {np}{parts}", "{np}{parts}, low poly", "render of {np}{parts}",
              "{np}{parts} on a white background", "a photo of {np}{parts}", "{np}{parts}, game asset",
              "a picture of {np}{parts}", "{np}{parts}, 3d render", "there is {np}{parts}"),
    "heldout": ("an asset showing {np}{parts}", "i want {np}{parts}", "make me {np}{parts}"),
}
PART_CONNECT = {"train": (" with {desc}", ", with {desc}"), "heldout": (" that has {desc}", " featuring {desc}")}
COLOURED = {"train": ("{c} {noun}", "{c}-coloured {noun}"), "heldout": ("{noun} coloured {c}", "{noun} in {c}")}


def choose(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def word_choices(table: dict, key: str, phrasing: str):
    train, held = table[key]
    return train if phrasing == "train" else held + train[:1]


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def size_words(spec: AssetSpec) -> list[str]:
    """Size adjectives that are true of this asset relative to its category."""
    rel = spec.scale[0] / base_scale(spec.category)
    words = []
    if spec.scale[0] == spec.scale[1] == spec.scale[2]:
        if rel < 0.9:
            words.append("small")
        elif rel > 1.06:
            words.append("large")
    if spec.scale[2] / spec.scale[0] > 1.15:
        words.append("tall")
    elif spec.scale[2] / spec.scale[0] < 0.87:
        words.append("short")
    return words


def caption(spec: AssetSpec, rng: np.random.Generator, phrasing: str = "train", omit: float = 0.0) -> str:
    """One caption naming the category, the main colour, accent part colours, pattern, size, counts.

    omit > 0 leaves out, each with that chance, the main colour, the size words and the part
    descriptions: what a user leaves unsaid ("a table") is then in the training data, paired with
    every asset it fits, so the generator samples it instead of meeting an unseen kind of prompt.
    """
    cat = spec.cat
    main = spec.main_colour()
    noun = choose(rng, cat.nouns if phrasing == "train" else cat.heldout_nouns + cat.nouns[:1])
    c = choose(rng, word_choices(COLOUR_WORDS, main, phrasing))
    adjectives = [choose(rng, word_choices(SIZE_WORDS, w, phrasing)) for w in size_words(spec)]
    core = choose(rng, COLOURED[phrasing]).format(c=c, noun=noun)
    if omit > 0:
        keep_colour, keep_size, keep_parts = rng.random(3) >= omit
        core = core if keep_colour else noun
        adjectives = adjectives if keep_size else []
    np_ = with_article(" ".join(adjectives + [core]))
    if omit > 0 and not keep_parts:
        return choose(rng, TEMPLATES[phrasing]).format(np=np_, parts="")
    descs = []
    for part in spec.parts():
        colour, pattern = spec.colours[part], spec.patterns.get(part)
        if colour == main and not pattern:
            continue
        words = [] if colour == main else [choose(rng, word_choices(COLOUR_WORDS, colour, phrasing))]
        desc = part_phrase(" ".join(words + [cat.noun_for(part)]))
        if pattern:
            sc = choose(rng, word_choices(COLOUR_WORDS, pattern[1], phrasing))
            desc += " with " + choose(rng, word_choices(PATTERN_WORDS, pattern[0], phrasing)).format(c=sc)
        descs.append(desc)
    for counted in cat.counts:
        n = cat.count_of(counted, spec.params)
        if rng.random() < 0.5 and n:
            noun = cat.noun_for(counted)
            descs.append(f"{number_word(n)} {noun if n > 1 else noun.rstrip('s')}")
    for part, param in cat.optional_parts.items():
        if spec.params[param] and rng.random() < 0.5 and not any(cat.noun_for(part) in d for d in descs):
            descs.append(part_phrase(cat.noun_for(part)))
    rng.shuffle(descs)
    parts = ""
    if descs:
        joined = descs[0] if len(descs) == 1 else ", ".join(descs[:-1]) + " and " + descs[-1]
        parts = choose(rng, PART_CONNECT[phrasing]).format(desc=joined)
    return choose(rng, TEMPLATES[phrasing]).format(np=np_, parts=parts)


def part_phrase(noun_phrase: str) -> str:
    """'legs' stays plural; a singular part gets its article."""
    return noun_phrase if noun_phrase.endswith("s") else with_article(noun_phrase)


def number_word(n: int) -> str:
    return ("zero", "one", "two", "three", "four", "five", "six")[n] if n <= 6 else str(n)
