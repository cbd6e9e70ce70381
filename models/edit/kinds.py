"""Which kind of edit an instruction asks for (resize, remove a part, recolour, ...), read from
its sentence embedding.

The flow model and the grounding network never name the kind of a geometric edit: the flow
model acts on the latent directly, and the grounding network's kind head lumps every edit that
is not a colour edit together as "other". Removing a part has its own path
(`models/edit/removal.py`), so something must say an instruction asks for one: a small MLP on
the instruction's pooled MiniLM embedding, standardised with its training set's statistics,
trained on the training templates of the procedural world's edits (`python -m models.train
edit_kinds`) and evaluated on the held-out templates (`python -m models.eval edit_kinds`).
A second head reads how a resize goes (`RESIZES`: the whole of it, its height or its width, a
part's length, up or down) for the grounded resizes (`models/edit/resize.py`,
`models/edit/part_resize.py`), a third which pattern an added pattern is (`PATTERNS_ASKED`) for
the grounded pattern (`models/edit/recolour.py`), a fourth how many of a part a count change
asks for (`COUNTS`) for the grounded recount (`models/edit/recount.py`).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..checkpoint import WEIGHTS_DIR, load_module
from ..world.edits import EDIT_KINDS
from ..world.palette import PATTERNS

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "edit_kinds.safetensors")
# how a resize goes: which extent (all three, or a part's size; the height, z; the width, x; a
# part's length, "long": its height unless it lies long across, as a car's body) and which way
RESIZES = ("whole_up", "whole_down", "z_up", "z_down", "x_up", "x_down", "long_up", "long_down")
# which pattern an added pattern is
PATTERNS_ASKED = tuple(p for p in PATTERNS if p != "plain")
# how many of a part a count change asks for
COUNTS = tuple(range(1, 9))


@dataclass(frozen=True)
class KindReaderConfig:
    text_dim: int = 384
    hidden: int = 256
    dropout: float = 0.1
    kinds: tuple[str, ...] = tuple(EDIT_KINDS)
    resizes: tuple[str, ...] = RESIZES
    patterns: tuple[str, ...] = PATTERNS_ASKED
    counts: tuple[int, ...] = COUNTS

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class KindReading:
    """Everything the kind reader says of a batch of instructions, from one pass of its trunk:
    the probability of each kind (B, len(kinds)) and each head's reading per instruction."""
    kinds: tuple[str, ...]
    probabilities: torch.Tensor
    resizes: list[str]
    patterns: list[str]
    counts: list[int]

    def probability(self, kind: str) -> torch.Tensor:
        """(B,) probability that each instruction asks for an edit of `kind`."""
        return self.probabilities[:, self.kinds.index(kind)]

    def likeliest(self, kind: str) -> torch.Tensor:
        """(B,) bool: `kind` is each instruction's likeliest kind."""
        return self.probabilities.argmax(-1) == self.kinds.index(kind)


class InstructionKinds(nn.Module):
    def __init__(self, cfg: KindReaderConfig = KindReaderConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("pooled_mean", torch.zeros(cfg.text_dim))
        self.register_buffer("pooled_std", torch.ones(cfg.text_dim))
        self.trunk = nn.Sequential(nn.Linear(cfg.text_dim, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                   nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Dropout(cfg.dropout))
        self.kind_head = nn.Linear(cfg.hidden, len(cfg.kinds))
        self.resize_head = nn.Linear(cfg.hidden, len(cfg.resizes))
        self.pattern_head = nn.Linear(cfg.hidden, len(cfg.patterns))
        self.count_head = nn.Linear(cfg.hidden, len(cfg.counts))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Raw pooled sentence embeddings (B, D) -> kind logits (B, len(kinds))."""
        return self.kind_head(self.features(pooled))

    def features(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.trunk((pooled - self.pooled_mean) / self.pooled_std)

    def resize_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, len(resizes)) logits of how a resize goes (meaningful for resize instructions only)."""
        return self.resize_head(self.features(pooled))

    def pattern_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, len(patterns)) logits of which pattern an instruction adds (meaningful for those only)."""
        return self.pattern_head(self.features(pooled))

    def count_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, len(counts)) logits of how many of a part an instruction asks for (count changes only)."""
        return self.count_head(self.features(pooled))

    @torch.inference_mode()
    def read(self, pooled: torch.Tensor) -> KindReading:
        """Raw pooled sentence embeddings (B, D) -> every kind's probability and every head's
        reading, the trunk run once."""
        h, cfg = self.features(pooled), self.cfg
        return KindReading(cfg.kinds, self.kind_head(h).softmax(-1),
                           [cfg.resizes[i] for i in self.resize_head(h).argmax(-1).tolist()],
                           [cfg.patterns[i] for i in self.pattern_head(h).argmax(-1).tolist()],
                           [cfg.counts[i] for i in self.count_head(h).argmax(-1).tolist()])

    def probability(self, pooled: torch.Tensor, kind: str) -> torch.Tensor:
        """(B,) probability that each instruction asks for an edit of `kind`."""
        return self.read(pooled).probability(kind)

    def resize(self, pooled: torch.Tensor) -> list[str]:
        """How each instruction's resize goes, one of `resizes`."""
        return self.read(pooled).resizes

    def pattern(self, pooled: torch.Tensor) -> list[str]:
        """Which pattern each instruction adds, one of `patterns`."""
        return self.read(pooled).patterns

    def count(self, pooled: torch.Tensor) -> list[int]:
        """How many of a part each instruction asks for, one of `counts`."""
        return self.read(pooled).counts


def load_kind_reader(path: str = DEFAULT_WEIGHTS, device="cpu") -> InstructionKinds:
    def build(config: dict) -> InstructionKinds:
        return InstructionKinds(KindReaderConfig(**{**config, "kinds": tuple(config["kinds"]),
                                                    "resizes": tuple(config["resizes"]),
                                                    "patterns": tuple(config["patterns"]),
                                                    "counts": tuple(config["counts"])}))

    return load_module(path, build, device, f"edit kind weights not found: {path} (python -m models.train edit_kinds)")
