"""Device and thread choice: CUDA when present (and asked for), else CPU with a sensible thread count."""
from __future__ import annotations

import os

import torch


def pick_device(preference: str = "auto") -> torch.device:
    pref = (preference or "auto").lower()
    if pref not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")
    if pref == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available")
    if pref == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    if pref == "cuda":
        return torch.device("cuda")
    threads = int(os.environ.get("KILN_THREADS", "0")) or max(1, min(8, os.cpu_count() or 1))
    torch.set_num_threads(threads)
    return torch.device("cpu")
