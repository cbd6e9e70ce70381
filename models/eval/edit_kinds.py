"""Held-out evaluation of the instruction kind reader (models/edit/kinds.py).

    python -m models.eval edit_kinds

Instructions of edits of held-out assets (the test stream), written with the held-out templates
("get rid of the {part}", "it should have {n} {part}") and, for comparison, the training
templates. Reports accuracy per kind and the precision and recall of the one kind that picks a
path of its own (remove_part: models/edit/removal.py), the resize head's accuracy on
whole-asset resizes (which extent, which way: models/edit/resize.py) and on part resizes (length,
width or size, which way: models/edit/part_resize.py), the pattern head's on added patterns, the
count head's on count changes (models/edit/recount.py), and prints a final JSON line.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ..edit.kinds import DEFAULT_WEIGHTS, load_kind_reader
from ..train.edit_kinds import (
    count_label,
    drawn_edits,
    embed,
    instructions,
    labelled_instructions,
    pattern_label,
    resize_instructions,
)
from . import finish

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_SOURCES = range(2000, 2600)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--json-out", default=os.path.join(REPO, "models", "cards", "edit_kinds_eval.json"))


def scores(model, texts: list[str], kinds: list[str]) -> dict:
    kinds_arr = np.array(kinds)
    with torch.inference_mode():
        pred = np.array(model.cfg.kinds)[model(embed(texts)).argmax(-1).numpy()]
    out = {"instructions": len(texts), "accuracy": round(float((pred == kinds_arr).mean()), 4),
           "per_kind": {k: round(float((pred[kinds_arr == k] == k).mean()), 3) for k in model.cfg.kinds
                        if (kinds_arr == k).any()}}
    said, true = pred == "remove_part", kinds_arr == "remove_part"
    out["remove_part"] = {"precision": round(float((said & true).sum() / max(said.sum(), 1)), 4),
                          "recall": round(float((said & true).sum() / max(true.sum(), 1)), 4),
                          "read_as_removal": sorted({t for t, s, r in zip(texts, said, true) if s and not r})[:10]}
    return out


def head_scores(read_out, texts: list[str], ways: list[str]) -> dict:
    """A head's reading (read_out: pooled -> names) of these instructions against their labels."""
    read = read_out(embed(texts))
    wrong = sorted(f"{t} -> {r}" for t, r, w in zip(texts, read, ways) if r != w)
    return {"instructions": len(texts), "accuracy": round(float(np.mean([r == w for r, w in zip(read, ways)])), 4),
            "wrong": wrong[:10]}


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    model = load_kind_reader(args.weights)
    summary = {"model": "edit_kinds", "weights": os.path.relpath(args.weights, REPO)}
    for name, phrasing in (("heldout_phrasing", "heldout"), ("training_phrasing", "train")):
        summary[name] = scores(model, *instructions("test", TEST_SOURCES, phrasing))
        summary[name]["resize_way"] = head_scores(
            model.resize, *resize_instructions("test", TEST_SOURCES, phrasing, ("resize_whole", "resize_axis")))
        summary[name]["part_resize_way"] = head_scores(
            model.resize, *resize_instructions("test", TEST_SOURCES, phrasing, ("resize_part",)))
        edits = list(drawn_edits("test", TEST_SOURCES, phrasing))
        summary[name]["pattern"] = head_scores(model.pattern, *labelled_instructions(edits, phrasing, pattern_label))
        summary[name]["count"] = head_scores(model.count, *labelled_instructions(edits, phrasing, count_label))
        print(name, summary[name], flush=True)
    return finish(summary, t0, args.json_out)
