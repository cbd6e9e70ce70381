"""Evaluate the part grounding network on held-out assets and instructions.

    python -m models.eval grounding [--per-set 40]

Sets (test-stream assets, never trained on), colour edits (recolours, patterns added and
removed) and the part edits whose part the network marks for the geometric paths (a removal, a
part resize, a count change):
  heldout_phrasing   held-out templates and colour synonyms ("the seat should be crimson")
  training_phrasing  training templates and words ("make the seat red"): the assets alone are new
  heldout_combo      recolouring a house's part, a combination never drawn in training
  heldout_combo_parts  the part edits' held-out combinations: removing a car's part, resizing a
                     lamp's, changing a rocket's count (training templates)
Per pair, on the 8192 surface points the edit evaluation encodes the source from (the region
read at 2048 of them):
  region_iou       IoU of the predicted region (probability > 0.5) with the exact region the
                   edit paints: the part (all of the asset for a recolour of the whole asset),
                   less the points its pattern paints (a recolour keeps patterns); the points
                   an added pattern paints on the part; the points a removed one painted
  colour_correct   the predicted RGB's nearest palette colour is the one asked for (recolours,
                   an added pattern's colour)
  part_iou         IoU of the predicted part (probability > 0.5) with the part the edit is
                   about (all of the asset for a whole recolour)
  kind_correct     the kind read (GROUNDED_KINDS) is the one asked
Colour is split by whether the instruction names it with a held-out synonym ("azure") or the
training word. Prints a final JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from ..data import coloured_cloud
from ..device import pick_device
from ..edit.data import PairKey, edit_for, source_points
from ..edit.grounding import DEFAULT_WEIGHTS, GROUNDED_KINDS, load_grounding
from ..edit.grounding_data import grounding_target, part_labels, point_labels, region_labels
from ..world.edits import HELDOUT_EDIT_COMBOS
from ..text.encoder import shared_encoder
from ..triplane.inference import encode_cloud
from ..triplane.loading import load_autoencoder
from ..world.asset import Asset, first_index_of
from ..world.captions import HELD_OUT_COLOUR_WORDS
from ..world.categories import CATEGORY_NAMES
from ..world.palette import nearest_colour
from . import finish
from .edit import TEST_BASE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REGION_POINTS = 2048
KINDS = ("recolour_all", "recolour_part", "add_pattern", "remove_pattern")
PART_EDIT_KINDS = ("remove_part", "resize_part", "change_count")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--per-set", type=int, default=40, help="pairs per recolour kind and set")
    p.add_argument("--device", default="auto")
    p.add_argument("--json-out", default=os.path.join(REPO, "models", "cards", "grounding_eval.json"))


def eval_keys(per_set: int) -> dict[str, list[PairKey]]:
    """Pair keys of each set; indices disjoint from the edit evaluation's, in the test stream."""
    sets: dict[str, list[PairKey]] = {"heldout_phrasing": [], "training_phrasing": [], "heldout_combo": []}
    for s, (name, phrasing) in enumerate((("heldout_phrasing", "heldout"), ("training_phrasing", "train"))):
        for k, kind in enumerate(("recolour_all", "recolour_part")):
            sets[name] += _first_keys(per_set, TEST_BASE + 10000 + 2000 * s + 1000 * k, 10 * per_set, phrasing, kind)
        for k, kind in enumerate(("add_pattern", "remove_pattern")):
            sets[name] += _first_keys(per_set, TEST_BASE + 20000 + 2000 * s + 1000 * k, 25 * per_set, phrasing, kind,
                                      keep=lambda pair: (pair.kind, pair.before.category) not in HELDOUT_EDIT_COMBOS)
        for k, kind in enumerate(PART_EDIT_KINDS):
            sets[name] += _first_keys(per_set // 2, TEST_BASE + 30000 + 3000 * s + 1000 * k, 25 * per_set, phrasing,
                                      kind, keep=lambda pair: names_a_part(pair)
                                      and (pair.kind, pair.before.category) not in HELDOUT_EDIT_COMBOS)
    sets["heldout_combo"] = _first_keys(per_set, first_index_of("house", TEST_BASE + 15000), 20 * per_set, "train",
                                        "recolour_part",
                                        step=len(CATEGORY_NAMES))
    sets["heldout_combo_parts"] = [
        key for kind, cat in sorted(HELDOUT_EDIT_COMBOS) if kind in PART_EDIT_KINDS
        for key in _first_keys(per_set // 2, first_index_of(cat, TEST_BASE + 16000), 20 * per_set, "train", kind,
                               step=len(CATEGORY_NAMES), keep=names_a_part)]
    return sets


def names_a_part(pair) -> bool:
    """The edit is about a part the source has (a house without windows has none to recount)."""
    return grounding_target(pair).part is not None


def _first_keys(n: int, first: int, tries: int, phrasing: str, kind: str, step: int = 1, keep=None) -> list[PairKey]:
    """The first n of `tries` test-stream assets from index `first` (every `step`-th) that have an
    edit of this kind (one `keep` accepts)."""
    keys = []
    for i in range(tries):
        if len(keys) == n:
            break
        key = PairKey("test", first + step * i, 0, phrasing, kind)
        pair = edit_for(key)
        if pair is not None and (keep is None or keep(pair)):
            keys.append(key)
    return keys


@torch.inference_mode()
def judge(ae, model, encoder, key: PairKey) -> dict:
    pair = edit_for(key)
    pts = source_points(pair.before, key)
    latent = encode_cloud(ae, coloured_cloud(Asset(pair.before), pts))
    region_pts = pts[:REGION_POINTS]
    enc = encoder.encode([pair.instruction])
    out = model(ae.decode(latent), latent, torch.as_tensor(region_pts)[None], enc.tokens, enc.mask)
    target = grounding_target(pair)
    labels = point_labels(pair.before, region_pts)
    truth = region_labels(target, labels) > 0.5
    pred = (out.region[0] > 0).cpu().numpy()
    union = np.logical_or(pred, truth).sum()
    row = {"kind": pair.kind, "instruction": pair.instruction, "category": pair.before.category,
           "region_iou": round(float(np.logical_and(pred, truth).sum() / max(union, 1)), 4),
           "part_share": round(float(truth.mean()), 4),
           "kind_read": GROUNDED_KINDS[int(out.kind[0].argmax())],
           "kind_correct": int(out.kind[0].argmax()) == target.kind,
           "held_out_word": any(w in pair.instruction for w in HELD_OUT_COLOUR_WORDS)}
    if "colour" in pair.details:
        colour_read = nearest_colour(out.colour[0].cpu().numpy())
        row.update(colour_asked=pair.details["colour"], colour_read=colour_read,
                   colour_correct=colour_read == pair.details["colour"])
    part, pred_part = part_labels(target, labels) > 0.5, (out.part[0] > 0).cpu().numpy()
    row["part_iou"] = round(float((pred_part & part).sum() / max((pred_part | part).sum(), 1)), 4)
    return row


def summarise(rows: list[dict]) -> dict:
    def mean(rs, k):
        v = [r[k] for r in rs if k in r]
        return round(float(np.mean(v)), 4) if v else None

    recolours = [r for r in rows if r["kind"] in KINDS[:2]]
    # the overall figures are the recolours' (comparable with the cards before patterns were grounded)
    out = {"pairs": len(recolours), "region_iou": mean(recolours, "region_iou"),
           "colour_correct": mean(recolours, "colour_correct"), "kind_correct": mean(recolours, "kind_correct")}
    for kind in KINDS + PART_EDIT_KINDS:
        k = [r for r in rows if r["kind"] == kind]
        if k:
            out[kind] = {"pairs": len(k), "region_iou": mean(k, "region_iou"), "kind_correct": mean(k, "kind_correct"),
                         "colour_correct": mean(k, "colour_correct"), "part_iou": mean(k, "part_iou"),
                         # what a region that ignored the instruction (the whole asset) would score
                         "whole_asset_iou": mean(k, "part_share")}
    for name, held in (("training_word", False), ("held_out_word", True)):
        k = [r for r in recolours if r["held_out_word"] == held]
        if k:
            out[f"colour_correct_{name}"] = {"pairs": len(k), "share": mean(k, "colour_correct")}
    return out


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    ae = load_autoencoder(device=device)
    model = load_grounding(args.weights, device)
    encoder = shared_encoder(device)
    t0 = time.time()
    summary = {"model": "grounding", "weights": os.path.relpath(args.weights, REPO)}
    for name, keys in eval_keys(args.per_set).items():
        rows = [judge(ae, model, encoder, key) for key in keys]
        summary[name] = summarise(rows)
        print(name, json.dumps(summary[name]), flush=True)
        for r in rows[:: max(1, len(rows) // 6)]:
            print("   ", json.dumps(r))
    return finish(summary, t0, args.json_out)
