"""A learned summary of the prompt: a few attention-pooled vectors over the sentence
encoder's token features, which condition the DiT (adaLN and cross-attention).

Why: a linear read-out of frozen MiniLM features, trained on the training captions, names
the category of 85% of held-out phrasings ("an armchair coloured scarlet"), while the DiT that
cross-attends the raw tokens got 46%: the flow loss alone is too weak and noisy a signal to
learn which words matter in a short CPU run. The summary is trained with auxiliary targets
taken from the procedural assets themselves (what the caption's asset is: category, main
colour, the colours on it, its size words; see `attribute_targets` in models/train/text.py) as
well as through the flow loss, so that it carries what paraphrases share. Nothing maps words to
attributes by hand: held-out words work only as far as the frozen encoder places them near
training words.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptHead(nn.Module):
    """(tokens (B, L, D), mask (B, L)) -> summary (B, Q, W): Q learned queries, each a
    softmax-weighted sum of the token features over the prompt's real tokens."""

    def __init__(self, text_dim: int = 384, queries: int = 8, width: int = 256):
        super().__init__()
        self.norm = nn.LayerNorm(text_dim)
        self.score = nn.Linear(text_dim, queries)
        self.value = nn.Linear(text_dim, width)
        self.mix = nn.Parameter(torch.zeros(queries, width))  # per-query bias so queries can differ

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(tokens)
        weights = self.score(h).masked_fill(~mask[..., None], float("-inf")).softmax(dim=1)  # (B, L, Q)
        return torch.einsum("blq,blw->bqw", weights, self.value(h)) + self.mix


class AttributeProbe(nn.Module):
    """Training-time read-out of the summary: one linear head per attribute of the described
    asset or edit. A target of integer dtype is a class (softmax, cross-entropy), a float one a
    multi-hot set (independent sigmoids). Heads and targets are matched by order; `multi_hot`
    names the multi-hot heads for `probabilities`, which has no targets to tell."""

    def __init__(self, summary_dim: int, sizes: tuple[int, ...], multi_hot: tuple[bool, ...] = ()):
        super().__init__()
        self.sizes = tuple(sizes)
        self.multi_hot = tuple(multi_hot) or (False,) * len(self.sizes)
        self.linear = nn.Linear(summary_dim, sum(self.sizes))

    def logits(self, summary: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.linear(summary.flatten(1)).split(self.sizes, dim=-1)

    def probabilities(self, summary: torch.Tensor) -> torch.Tensor:
        """(B, sum(sizes)): each class head's softmax and each multi-hot head's sigmoids."""
        return torch.cat([lg.sigmoid() if multi else lg.softmax(-1)
                          for lg, multi in zip(self.logits(summary), self.multi_hot)], dim=-1)

    def loss(self, summary: torch.Tensor, targets: dict) -> torch.Tensor:
        total = summary.new_zeros(())
        for logits, target in zip(self.logits(summary), targets.values()):
            if target.is_floating_point():
                total = total + F.binary_cross_entropy_with_logits(logits, target)
            else:
                total = total + F.cross_entropy(logits, target)
        return total

    @torch.no_grad()
    def accuracy(self, summary: torch.Tensor, targets: dict) -> dict[str, float]:
        """Share right, for each class attribute."""
        return {name: float((logits.argmax(-1) == target).float().mean())
                for logits, (name, target) in zip(self.logits(summary), targets.items())
                if not target.is_floating_point()}
