"""Held-out evaluation of the part presence network (models/edit/presence.py).

    python -m models.eval part_presence

Held-out (test-stream) assets, encoded from their surface samples as the edit evaluation
encodes its sources, asked about every part noun of the training edits in the held-out
templates that name a part ("get rid of the {part}", "without the {part}", "the {part} should be
{c}", ...) and, for comparison, the training templates. Reports accuracy, the share of present
parts said present (what a removal needs) and of absent ones said absent (what keeps a removal
from cutting a piece off), per category, and prints a final JSON line.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from ..data import coloured_cloud
from ..edit.data import PairKey, source_points
from ..edit.presence import DEFAULT_WEIGHTS, load_part_presence
from ..train.edit_kinds import embed, slot_vocabulary
from ..train.part_presence import has_part, part_questions
from ..triplane.inference import encode_cloud
from ..triplane.loading import load_autoencoder
from ..world.asset import Asset, sample_asset_spec
from . import finish

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--assets", type=int, default=130, help="held-out assets (test stream from index 2000)")
    p.add_argument("--json-out", default=os.path.join(REPO, "models", "cards", "part_presence_eval.json"))


def run(args: argparse.Namespace) -> int:
    t0 = time.time()
    rng = np.random.default_rng(0)
    model, ae = load_part_presence(args.weights), load_autoencoder()
    vocab = slot_vocabulary(range(3000))
    nouns = vocab["part"]
    specs = [sample_asset_spec("test", 2000 + i) for i in range(args.assets)]
    with torch.inference_mode():
        latents = torch.cat([encode_cloud(ae, coloured_cloud(Asset(s), source_points(s, PairKey("test", 2000 + i, 0))))
                             for i, s in enumerate(specs)])
    truth = np.array([[has_part(s.parts(), n) for n in nouns] for s in specs])
    summary = {"model": "part_presence", "weights": os.path.relpath(args.weights, REPO), "assets": args.assets,
               "nouns": len(nouns), "present_share": round(float(truth.mean()), 3)}
    for name, phrasing in (("heldout_phrasing", "heldout"), ("training_phrasing", "train")):
        texts, named = part_questions(nouns, phrasing, vocab, 1, rng)
        pooled = embed(texts)
        noun_of = np.array([nouns.index(n) for n in named])
        said = np.stack([model.probability(latents[i:i + 1].expand(len(texts), -1, -1, -1, -1), pooled).numpy() > 0.5
                         for i in range(len(specs))])          # (assets, texts)
        want = truth[:, noun_of]
        per_cat = {}
        for cat in sorted({s.category for s in specs}):
            rows = [i for i, s in enumerate(specs) if s.category == cat]
            per_cat[cat] = round(float((said[rows] == want[rows]).mean()), 3)
        # per part noun asked of assets that have it: the removals a miss leaves undone
        per_noun = {nouns[j]: round(float(said[:, noun_of == j][want[:, noun_of == j]].mean()), 3)
                    for j in range(len(nouns)) if truth[:, j].sum() >= 3}
        summary[name] = {"questions": int(said.size), "accuracy": round(float((said == want).mean()), 4),
                         "present_said_present": round(float(said[want].mean()), 4),
                         "absent_said_absent": round(float((~said[~want]).mean()), 4),
                         "per_category_accuracy": per_cat, "present_said_present_per_noun": per_noun}
        print(name, summary[name], flush=True)
    return finish(summary, t0, args.json_out)
