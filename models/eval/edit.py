"""Evaluate instruction editing on held-out pairs.

    python -m models.eval edit [--per-kind 6] [--per-combo 4] [--chains 8]
    python -m models.eval edit --kinds add_part,change_count --per-kind 16 --pairs-only --json-out X
    python -m models.eval edit --test-base 5000 --per-kind 12 --pairs-only --json-out X   (other held-out assets)

Pair sets (none seen in training):
  heldout_phrasing  test-stream assets, instructions written with held-out templates
                    ("the seat should be red", "get rid of the armrests"), every edit kind
  heldout_combo     the held-out (edit kind, category) combinations, e.g. resizing a lamp's
                    part or removing a car's spoiler, with training phrasings
Everything is measured on the field the backend meshes (the edit composited over its source,
`models.edit.composite`, with a removed part's cut; `--no-composite`: the edited latent's own
decoding, with the cut; `--no-removal`: removals by the flow model), against the
exact before/after assets of the procedural world:
  success       resize whole/axis: the decoded bounding box moved at least half-way (in log
                scale) to the asked factor along the asked axes. Other kinds: in the region
                the edit changes (occupancy for geometry edits, nearest palette colour of
                surface points for colour edits), the edit achieved at least half of the
                change that the autoencoder can show: (acc_edit - acc_source) /
                (acc_oracle - acc_source) >= 0.5, where oracle = the encoded true target.
                Pairs whose change the autoencoder cannot show (oracle gain < 0.1) are
                counted apart ("unrepresentable"), not as successes.
  progress      the share of the asked change achieved (the ratio above, or the bounding box's
                log-scale move), clipped to [0, 1] and averaged: finer than the success rate.
  preservation  in the region the edit does not touch (points whose exact SDF is equal
                before and after): occupancy IoU of the edited field with the source's
                decoded field, and the colour error on untouched surface points.
                oracle_*: the same for the encoded true target, the latent space's own ceiling.
  chained       5 successive held-out edits; the untouched-region IoU and colour error
                against the source after each step.
  external      meshes Kiln did not make, fitted and recoloured ("make it red"): volume IoU
                with the mesh itself, shown over the mesh (the backend) and without it.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import torch

from ..data import coloured_cloud
from ..device import pick_device
from ..edit.composite import CompositeField, mesh_surface, shown_field
from ..edit.data import PairKey, edit_for, pair_clouds, source_points
from ..edit.grounding import DEFAULT_WEIGHTS as GROUNDING_WEIGHTS
from ..edit.kinds import DEFAULT_WEIGHTS as KINDS_WEIGHTS
from ..edit.pipeline import DEFAULT_WEIGHTS, LatentEditor
from ..edit.recolour import SHAPE_KEEPING_PATHS
from ..edit.removal import carried_cuts
from ..geometry import grid_points
from ..meshio import normalise, sdf_samples
from ..triplane.inference import LatentField, encode_cloud, encode_source_mesh
from ..triplane.loading import load_autoencoder
from ..world.asset import Asset, first_index_of, sample_asset_spec
from ..world.captions import HELD_OUT_COLOUR_WORDS
from ..world.categories import CATEGORY_NAMES
from ..world.edits import EDIT_KINDS, FACTOR, HELDOUT_EDIT_COMBOS
from ..world.palette import nearest_colour_indices
from . import finish
from .autoencoder import external_meshes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLOUR_KINDS = ("recolour_all", "recolour_part", "add_pattern", "remove_pattern")
BBOX_KINDS = ("resize_whole", "resize_axis")
# unsupported requests, disjoint from the phrases of models/edit/unsupported.py
OOD_INSTRUCTIONS = ("make it a dragon", "make it out of gold", "turn it into a bicycle", "asdfgh qwerty",
                    "play some jazz music", "what is the capital of france")
TEST_BASE = 2000
MIN_EXTENT_CELLS = 4   # a resize is measured along the axes whose source extent spans this many grid cells


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--per-kind", type=int, default=6, help="held-out-phrasing pairs per edit kind")
    p.add_argument("--per-combo", type=int, default=4, help="pairs per held-out (kind, category) combination")
    p.add_argument("--kinds", default=None,
                   help="comma-separated edit kinds: only these pairs (held-out phrasings and combinations)")
    p.add_argument("--pairs-only", action="store_true",
                   help="only the pair sets: no chains, out-of-domain instructions or external meshes")
    p.add_argument("--chains", type=int, default=8)
    p.add_argument("--chain-length", type=int, default=5)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--locality", type=float, default=None, help="default: the pipeline's")
    p.add_argument("--no-gate", action="store_true", help="ignore the model's change gate")
    p.add_argument("--grounding-weights", default=GROUNDING_WEIGHTS,
                   help="part grounding network for recolours (models/edit/grounding.py)")
    p.add_argument("--no-grounding", action="store_true",
                   help="recolours by the flow model too, as before the grounding network")
    p.add_argument("--no-composite", action="store_true",
                   help="judge the edited latent's own decoding, not the edit composited over its source")
    p.add_argument("--grounded-kinds", default=None,
                   help="comma-separated colour edit kinds the grounded path takes (default: the pipeline's)")
    p.add_argument("--calibration-steps", type=int, default=None,
                   help="grounded recolours' colour calibration steps (default: the pipeline's)")
    p.add_argument("--no-removal", action="store_true",
                   help="part removals by the flow model (no kind reader, no grounded removal)")
    p.add_argument("--no-resize", action="store_true",
                   help="whole-asset resizes by the flow model, not scaled on the decoded surface")
    p.add_argument("--no-part-resize", action="store_true",
                   help="part resizes by the flow model, not made on the decoded surface")
    p.add_argument("--no-recount", action="store_true",
                   help="count changes by the flow model, not laid out again on the decoded surface")
    p.add_argument("--kinds-weights", default=KINDS_WEIGHTS, help="the instruction kind reader")
    p.add_argument("--no-palette-fallback", action="store_true",
                   help="grounded edits never fall back to the nearest palette colour (RecolourConfig)")
    p.add_argument("--test-base", type=int, default=TEST_BASE,
                   help="first test-stream asset of the pair sets (another base: other held-out assets, "
                        "a check that changes made looking at the default set carry over)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json-out", default=os.path.join(REPO, "models", "cards", "edit_eval.json"))


def heldout_keys(per_kind: int, per_combo: int, kinds: tuple[str, ...] = EDIT_KINDS,
                 base: int = TEST_BASE) -> dict[str, list[PairKey]]:
    phrasing = []
    for kind in kinds:
        i, got = 0, 0
        while got < per_kind and i < 400:
            key = PairKey("test", base + 400 * EDIT_KINDS.index(kind) + i, 0, "heldout", kind)
            i += 1
            if edit_for(key) is not None:
                phrasing.append(key)
                got += 1
    combo = []
    for kind, cat in sorted(c for c in HELDOUT_EDIT_COMBOS if c[0] in kinds):
        first, i, got = first_index_of(cat, base + 4000), 0, 0
        while got < per_combo and i < 200:
            key = PairKey("test", first + len(CATEGORY_NAMES) * i, 0, "train", kind)
            i += 1
            if edit_for(key) is not None:
                combo.append(key)
                got += 1
    return {"heldout_phrasing": phrasing, "heldout_combo": combo}


class Probe:
    """Fixed evaluation points for one pair and the exact before/after fields on them."""

    def __init__(self, before: Asset, after: Asset, before_surf: np.ndarray, after_surf: np.ndarray, seed: int):
        rng = np.random.default_rng(seed)
        near = np.concatenate([before_surf, after_surf])
        near = near + rng.normal(size=near.shape).astype(np.float32) * 0.02
        self.volume = np.concatenate([rng.uniform(-1, 1, (32768, 3)).astype(np.float32), near])
        self.sdf_b = before.query(self.volume, with_colour=False)[0]
        self.sdf_a = after.query(self.volume, with_colour=False)[0]
        self.changed = (self.sdf_b < 0) != (self.sdf_a < 0)
        self.untouched = np.abs(self.sdf_b - self.sdf_a) < 1e-6
        # colour: after-surface points on unchanged geometry, labelled before and after
        self.surface = after_surf
        same_geom = np.abs(before.query(after_surf, with_colour=False)[0]) < 2e-3
        lab_b = nearest_colour_indices(before.query(after_surf)[1])
        lab_a = nearest_colour_indices(after.query(after_surf)[1])
        self.colour_changed = same_geom & (lab_b != lab_a)
        self.colour_untouched = same_geom & (lab_b == lab_a)
        self.label_after = lab_a


def extents(field: LatentField, grid: np.ndarray) -> np.ndarray:
    occ = field.sdf(grid) < 0
    if not occ.any():
        return np.zeros(3)
    pts = grid[occ]
    return pts.max(0) - pts.min(0)


def occupancy_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def judge(pair, probe: Probe, src: LatentField, edit: LatentField, oracle: LatentField, grid: np.ndarray) -> dict:
    row = {"kind": pair.kind, "instruction": pair.instruction, "category": pair.before.category}
    if pair.kind in BBOX_KINDS:
        e_src, e_edit = extents(src, grid), extents(edit, grid)
        d = pair.details
        axes = [0, 1, 2] if pair.kind == "resize_whole" else [0 if d["axis"] == "x" else 2]
        # an extent of a few cells of the grid cannot show a 25% change: a sword's blade 2 cells
        # thick read 3 after "smaller" (x1.5), and its whole resize 0.2 of the way for 0.91 in height
        cell = 2.0 / (round(len(grid) ** (1 / 3)) - 1)
        axes = [a for a in axes if e_src[a] >= MIN_EXTENT_CELLS * cell] or axes
        factor = FACTOR["whole"] ** d["direction"] if pair.kind == "resize_whole" else d["factor"]
        moved = float(np.mean(np.log(np.maximum(e_edit[axes], 1e-3) / np.maximum(e_src[axes], 1e-3))) / np.log(factor))
        row.update(progress=round(moved, 3), success=moved >= 0.5)
    else:
        if pair.kind in COLOUR_KINDS:
            sel = probe.colour_changed
            pts, want = probe.surface[sel], probe.label_after[sel]
            acc = [float((nearest_colour_indices(f.rgb(pts)) == want).mean()) if len(pts) else np.nan for f in (src, edit, oracle)]
        else:
            sel = probe.changed
            want = probe.sdf_a[sel] < 0
            acc = [float(((f.sdf(probe.volume[sel]) < 0) == want).mean()) if sel.any() else np.nan
                   for f in (src, edit, oracle)]
        gain = acc[2] - acc[0]
        row.update(acc_source=round(acc[0], 3), acc_edit=round(acc[1], 3), acc_oracle=round(acc[2], 3))
        if not np.isfinite(gain) or gain < 0.1:
            row.update(representable=False, success=None)
        else:
            row.update(progress=round((acc[1] - acc[0]) / gain, 3), success=(acc[1] - acc[0]) / gain >= 0.5)
    row.update(preservation(probe, src, edit))
    # the same measure for the encoded true target: what the latent space itself keeps of the
    # untouched region when the asset changes (the ceiling of any edit in it)
    row.update({f"oracle_{k}": v for k, v in preservation(probe, src, oracle).items()})
    return row


def preservation(probe: Probe, src: LatentField, edit: LatentField) -> dict:
    out = {}
    if probe.untouched.sum() >= 500:
        pts = probe.volume[probe.untouched]
        out["untouched_iou"] = round(occupancy_iou(src.sdf(pts) < 0, edit.sdf(pts) < 0), 4)
    if probe.colour_untouched.sum() >= 100:
        pts = probe.surface[probe.colour_untouched]
        out["untouched_colour_l1"] = round(float(np.abs(src.rgb(pts) - edit.rgb(pts)).mean()), 4)
    return out


def summarise(rows: list[dict]) -> dict:
    judged = [r for r in rows if r["success"] is not None]
    per_kind = {}
    for kind in EDIT_KINDS:
        k = [r for r in rows if r["kind"] == kind]
        kj = [r for r in k if r["success"] is not None]
        if k:
            per_kind[kind] = {"pairs": len(k), "success": round(float(np.mean([r["success"] for r in kj])), 3) if kj else None,
                              "progress": _progress(kj), "unrepresentable": len(k) - len(kj),
                              "untouched_iou": _mean(k, "untouched_iou")}
    return {"pairs": len(rows), "judged": len(judged),
            "edit_success": round(float(np.mean([r["success"] for r in judged])), 4) if judged else None,
            "progress": _progress(judged), "unrepresentable": len(rows) - len(judged),
            "untouched_iou": _mean(rows, "untouched_iou"), "untouched_colour_l1": _mean(rows, "untouched_colour_l1"),
            "oracle_untouched_iou": _mean(rows, "oracle_untouched_iou"),
            "oracle_untouched_colour_l1": _mean(rows, "oracle_untouched_colour_l1"),
            "warned_as_unsupported": round(float(np.mean([r.get("warned", False) for r in rows])), 4),
            "per_kind": per_kind}


def by_colour_word(rows: list[dict]) -> dict:
    """Success of the colour edits split by whether the instruction names its colour with a held-out
    synonym ("scarlet", "azure") or the training word: which failures are the sentence encoder's."""
    out = {}
    for name, held in (("training_word", False), ("held_out_word", True)):
        k = [r for r in rows if r["kind"] in COLOUR_KINDS and r["success"] is not None
             and any(w in r["instruction"] for w in HELD_OUT_COLOUR_WORDS) == held]
        out[name] = {"pairs": len(k), "success": round(float(np.mean([r["success"] for r in k])), 3) if k else None,
                     "progress": _progress(k)}
    return out


def _progress(judged: list[dict]):
    """Mean share of the asked change achieved (success is progress >= 0.5), each pair's clipped
    to [0, 1]: a finer figure than the success rate on a few pairs."""
    v = [min(max(r["progress"], 0.0), 1.0) for r in judged]
    return round(float(np.mean(v)), 3) if v else None


def _mean(rows, key):
    v = [r[key] for r in rows if key in r]
    return round(float(np.mean(v)), 4) if v else None


def keeps_shape(edits) -> bool:
    """Whether a chain of these edits is shown with its reference's shape, as the backend shows
    it (by the path each edit took): every one of them a grounded colour edit."""
    return all(e.path in SHAPE_KEEPING_PATHS for e in edits)


def cuts_of(edits) -> list:
    """The removed parts a chain of edits shows cut out, moved with any later resize (as the
    backend carries them)."""
    cuts = []
    for e in edits:
        cuts = carried_cuts(cuts, e)
    return cuts


def encoded(ae, cloud: np.ndarray) -> torch.Tensor:
    return encode_cloud(ae, cloud)


def run(args: argparse.Namespace) -> int:
    device = pick_device(args.device)
    ae = load_autoencoder(device=device)
    editor = LatentEditor.load(args.weights, device, autoencoder=ae,
                               grounding_path=None if args.no_grounding else args.grounding_weights,
                               kinds_path=None if args.no_removal else args.kinds_weights)
    if args.calibration_steps is not None and editor.grounded is not None:
        editor.grounded.cfg = replace(editor.grounded.cfg, calibration_steps=args.calibration_steps)
    if args.grounded_kinds is not None and editor.grounded is not None:
        editor.grounded.cfg = replace(editor.grounded.cfg, kinds=tuple(args.grounded_kinds.split(",")))
    if args.no_resize and editor.grounded is not None:
        editor.grounded.resize = None
    if args.no_part_resize and editor.grounded is not None:
        editor.grounded.part_resize = None
    if args.no_recount and editor.grounded is not None:
        editor.grounded.recount = None
    if args.no_palette_fallback and editor.grounded is not None:
        editor.grounded.cfg = replace(editor.grounded.cfg, palette_fallback=None)
    kw = {k: v for k, v in (("guidance", args.guidance), ("steps", args.steps), ("locality", args.locality))
          if v is not None}
    if args.no_gate:
        kw["gate"] = False
    grid = grid_points(64)
    t0 = time.time()
    summary = {"model": "edit", "weights": os.path.relpath(args.weights, REPO), **kw,
               "composite": not args.no_composite,
               "grounding": None if args.no_grounding else os.path.relpath(args.grounding_weights, REPO),
               "calibration_steps": editor.grounded.cfg.calibration_steps if editor.grounded else None,
               "grounded_kinds": list(editor.grounded.cfg.kinds) if editor.grounded else None,
               "palette_fallback": editor.grounded.cfg.palette_fallback if editor.grounded else None,
               "grounded_removal": bool(editor.grounded and editor.grounded.kind_reader is not None),
               "grounded_resize": bool(editor.grounded and editor.grounded.kind_reader is not None
                                       and editor.grounded.resize is not None),
               "grounded_part_resize": bool(editor.grounded and editor.grounded.kind_reader is not None
                                            and editor.grounded.part_resize is not None),
               "grounded_recount": bool(editor.grounded and editor.grounded.kind_reader is not None
                                        and editor.grounded.recount is not None)}
    all_rows = []
    kinds = tuple(args.kinds.split(",")) if args.kinds else EDIT_KINDS
    if args.kinds:
        summary["kinds"] = list(kinds)
    if args.test_base != TEST_BASE:
        summary["test_base"] = args.test_base
    for name, keys in heldout_keys(args.per_kind, args.per_combo, kinds, args.test_base).items():
        rows = []
        for key in keys:
            pair = edit_for(key)
            before_pts = source_points(pair.before, key)
            src_cloud, tgt_cloud = pair_clouds(key, pair, before_pts)
            z_src, z_oracle = encoded(ae, src_cloud), encoded(ae, tgt_cloud)
            edit = editor.edit(z_src, pair.instruction, seed=0, **kw)
            probe = Probe(Asset(pair.before), Asset(pair.after), before_pts[:4096], tgt_cloud[:4096, :3], key.source)
            shown = shown_field(ae, z_src, edit.latent, composite=not args.no_composite,
                                keep_shape=keeps_shape([edit]), cuts=cuts_of([edit]))
            row = judge(pair, probe, LatentField(ae, z_src), shown, LatentField(ae, z_oracle), grid)
            rows.append({**row, "edit_path": edit.path, "warned": bool(edit.warnings)})
        summary[name] = summarise(rows)
        if name == "heldout_phrasing":
            summary[name]["colour_edits_by_word"] = by_colour_word(rows)
        print(name, json.dumps(summary[name]), flush=True)
        for r in rows[:: max(1, len(rows) // 8)]:
            print("   ", json.dumps(r))
        all_rows += [{"set": name, **r} for r in rows]
    if not args.pairs_only:
        summary["chained"] = chained(ae, editor, args, kw)
        print("chained", json.dumps(summary["chained"]), flush=True)
        summary["out_of_domain"] = out_of_domain(ae, editor, kw, composite=not args.no_composite)
        print("out_of_domain", json.dumps(summary["out_of_domain"]), flush=True)
        summary["external_meshes"] = external_mesh_recolours(ae, editor, kw)
        print("external_meshes", json.dumps(summary["external_meshes"]), flush=True)
    if args.json_out:  # every judged pair, for failure analysis: <json_out>_pairs.jsonl
        with open(os.path.splitext(args.json_out)[0] + "_pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in all_rows)
    return finish(summary, t0, args.json_out)


def chained(ae, editor: LatentEditor, args, kw) -> dict:
    """Successive held-out edits of one asset; preservation against the original after each."""
    per_step_iou = [[] for _ in range(args.chain_length)]
    per_step_col = [[] for _ in range(args.chain_length)]
    for c in range(args.chains):
        index = TEST_BASE + 7000 + c
        spec = sample_asset_spec("test", index)
        key0 = PairKey("test", index, 0, "heldout")
        pts = source_points(spec, key0)
        original = Asset(spec)
        z = z0 = encoded(ae, coloured_cloud(original, pts))
        src_field = LatentField(ae, z)
        current, edits = spec, []
        for step in range(args.chain_length):
            pair = edit_for(PairKey("test", index, step, "heldout"), current)
            if pair is None:
                break
            edits.append(editor.edit(z, pair.instruction, seed=step, **kw))
            z = edits[-1].latent
            current = pair.after
            after = Asset(current)
            after_pts = pts[np.abs(after.query(pts, with_colour=False)[0]) < 2e-3]
            probe = Probe(original, after, pts[:4096], after_pts[:4096] if len(after_pts) else pts[:16], index)
            kept = preservation(probe, src_field, shown_field(ae, z0, z, composite=not args.no_composite,
                                                              keep_shape=keeps_shape(edits),
                                                              cuts=cuts_of(edits)))
            if "untouched_iou" in kept:
                per_step_iou[step].append(kept["untouched_iou"])
            if "untouched_colour_l1" in kept:
                per_step_col[step].append(kept["untouched_colour_l1"])
    return {"chains": args.chains,
            "untouched_iou_after_step": [round(float(np.mean(v)), 4) if v else None for v in per_step_iou],
            "untouched_colour_l1_after_step": [round(float(np.mean(v)), 4) if v else None for v in per_step_col],
            "chains_measured_after_step": [len(v) for v in per_step_iou]}


def external_mesh_recolours(ae, editor: LatentEditor, kw, instruction: str = "make it red") -> dict:
    """Meshes Kiln did not make (trimesh primitives, Suzanne from Blender), fitted (60 steps) and
    recoloured: a recolour should leave the mesh's shape as it was. Volume IoU with the mesh
    itself (200k uniform points) of the fitted latent, of the edit's own decoding, of the edit
    composited over the fitted latent and over the mesh (what the backend shows)."""
    out = {}
    for name, mesh in external_meshes().items():
        src = normalise(mesh)
        pts, sdf, _ = sdf_samples(src, 0, 200_000, np.random.default_rng(7))
        inside = sdf < 0
        z, _ = encode_source_mesh(ae, src, fit_steps=60, seed=0)
        edit = editor.edit(z, instruction, seed=0, **kw)
        z_edit, keep = edit.latent, keeps_shape([edit])
        fields = {"fit": LatentField(ae, z), "edit_latent_only": LatentField(ae, z_edit),
                  "edit_over_fit": CompositeField(ae, z, z_edit, keep_shape=keep),
                  "edit_over_mesh": CompositeField(ae, z, z_edit, surface=mesh_surface(src), keep_shape=keep)}
        out[name] = {k: round(occupancy_iou(f.sdf(pts) < 0, inside), 4) for k, f in fields.items()}
    out["mean"] = {k: round(float(np.mean([r[k] for r in out.values()])), 4) for k in next(iter(out.values()))}
    return out


def out_of_domain(ae, editor: LatentEditor, kw, composite: bool) -> dict:
    out = {}
    grid = grid_points(48)
    for text in OOD_INSTRUCTIONS:
        ious, warned = [], []
        for i in range(4):
            spec = sample_asset_spec("test", TEST_BASE + 9000 + i)
            pts = source_points(spec, PairKey("test", TEST_BASE + 9000 + i, 0))
            z = encoded(ae, coloured_cloud(Asset(spec), pts))
            edit = editor.edit(z, text, seed=0, **kw)
            shown = shown_field(ae, z, edit.latent, composite, keep_shape=keeps_shape([edit]),
                                cuts=cuts_of([edit]))
            ious.append(occupancy_iou(LatentField(ae, z).sdf(grid) < 0, shown.sdf(grid) < 0))
            warned.append(bool(edit.warnings))
        out[text] = {"warned": float(np.mean(warned)), "iou_with_source": round(float(np.mean(ious)), 4)}
    return out
