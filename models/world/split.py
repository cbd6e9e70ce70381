"""The fixed held-out split: held-out shapes (a separate seed stream),
held-out (category, colour) combinations and held-out phrasings."""
from __future__ import annotations

# A training asset never carries one of these colours on any part of that category.
HELDOUT_COMBOS: frozenset[tuple[str, str]] = frozenset({
    ("chair", "green"), ("table", "blue"), ("lamp", "red"), ("mug", "yellow"),
    ("car", "purple"), ("rocket", "white"), ("tree", "pink"), ("house", "teal"),
    ("sword", "orange"), ("mushroom", "blue"), ("bottle", "black"), ("vase", "grey"),
    ("stool", "brown"),
})

SPLITS = ("train", "test")
_SPLIT_CODE = {"train": 0, "test": 1, "combo": 2}


def split_code(split: str) -> int:
    if split not in _SPLIT_CODE:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_CODE)}")
    return _SPLIT_CODE[split]


def allowed_colour(category: str, colour: str, split: str) -> bool:
    return split != "train" or (category, colour) not in HELDOUT_COMBOS
