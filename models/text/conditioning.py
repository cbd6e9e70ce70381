"""Per-dimension standardisation of sentence-encoder features before they condition a DiT.

Sentence embeddings of short prompts and instructions differ by a few percent per dimension
("make it blue" vs "make it red": cosine 0.76, per-dimension spread 0.04), and a few token
dimensions carry almost all the magnitude. Standardising each dimension with statistics of
the training texts lets adaLN and cross-attention see the differences from the first step:
without it the edit model still ignored the instruction after 1500 steps, and the first text
model leaned on exact training words. The statistics ship inside each model's weights file.
"""
from __future__ import annotations

import torch

TEXT_STAT_KEYS = ("pooled_mean", "pooled_std", "token_mean", "token_std")


def text_statistics(pooled: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
    valid = tokens[mask].float()
    return {"pooled_mean": pooled.mean(0), "pooled_std": pooled.std(0).clamp(min=1e-2),
            "token_mean": valid.mean(0), "token_std": valid.std(0).clamp(min=5e-2)}


def standardise_text(pooled, tokens, mask, stats: dict) -> tuple:
    pooled = (pooled - stats["pooled_mean"]) / stats["pooled_std"]
    tokens = (tokens.float() - stats["token_mean"]) / stats["token_std"]
    return pooled, tokens * mask[..., None], mask
