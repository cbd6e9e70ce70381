"""Instructions the bundled edit model cannot carry out, as a bank of embeddings.

The procedural world edits colour, size, parts, counts and patterns of 13 object kinds.
Nearest-neighbour similarity to the training instructions alone does not separate
"make it a dragon" from "make it purple" (same sentence frame, similarity 0.44, while some
held-out phrasings of real edits score 0.38), so the editor also keeps a bank of requests
outside that world: other objects and creatures, materials, finishes, styles, motions.
An instruction whose nearest neighbour is in this bank is refused softly: a warning and
no change. The evaluation's unsupported instructions are disjoint from these phrases.
"""
from __future__ import annotations

TEMPLATES = ("make it {}", "turn it into {}", "make it look like {}", "change it to {}", "give it {}")
CONCEPTS = (
    # other things and creatures
    "a horse", "a cat", "a bird", "a fish", "a robot", "a spaceship", "a boat", "a plane", "a castle",
    "a person", "a monster", "a flower", "a guitar", "a computer", "a building",
    # materials and finishes the world has no notion of
    "wooden", "metallic", "made of glass", "transparent", "shiny", "glowing", "furry", "rusty", "marble",
    "made of stone", "leather",
    # styles, moods, motion and non-edits
    "cartoonish", "realistic", "low poly", "happy", "scary", "old", "modern", "animated", "move",
    "spin around", "broken", "melted", "wings", "a face", "eyes", "a tail",
)
NON_INSTRUCTIONS = ("hello", "what is this", "thank you", "tell me a joke", "undo", "lorem ipsum dolor sit amet")


def phrases() -> list[str]:
    return [t.format(c) for t in TEMPLATES for c in CONCEPTS] + list(NON_INSTRUCTIONS)
