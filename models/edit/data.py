"""Training and evaluation pairs for the edit model, from the procedural world's exact edits.

Each pair is (source cloud, target cloud, instruction). The target's point cloud reuses
the source's samples wherever the surface did not move (points still on the target's
surface) and takes fresh target samples only where it did, so the encoder sees the
same points on untouched parts: the latent delta then holds the edit, not sampling noise.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..data import coloured_cloud, surface_points
from ..parallel import parallel_map
from ..world.asset import Asset, AssetSpec, sample_asset_spec
from ..world.edits import EDIT_KINDS, EditPair, sample_edit

N_POINTS = 8192          # points per cloud (4x the encoder's training clouds: less sampling noise)
ON_SURFACE = 2e-3        # |sdf| below this: a source point still lies on the target's surface
EDITS_PER_SOURCE = 2
# version of the pair data in the cache names: 2 samples the target afresh even when every
# source point stays on its surface (a part added beside the asset, not on it: version 1 kept
# the source cloud there, and 111 of 6000 pairs taught "add a part" as no change)
PAIRS_VERSION = 2
# Kinds that apply to few assets (an optional part to add or remove, a count, a pattern):
# every second edit of a source is one of these when the source allows it, so the
# training set is not 90% recolours and resizes.
RARE_KINDS = ("add_part", "remove_part", "change_count", "remove_pattern", "resize_part", "add_pattern")
# The edits that add or take away parts, which the flow model still makes at inference (colours,
# patterns and part removals are grounded on the asset: models/edit/pipeline.py) and under-fits
# most; they apply to about a third of the assets: extra pairs of these, from further sources,
# for the training's last stage.
STRUCTURE_KINDS = ("add_part", "change_count")
KIND_GROUPS = {"rare": RARE_KINDS, "structure": STRUCTURE_KINDS}


@dataclass(frozen=True)
class PairKey:
    split: str          # asset stream: "train" | "test"
    source: int         # asset index in that stream
    k: int              # which edit of that source
    phrasing: str = "train"
    kind: str | None = None   # an edit kind, a group of KIND_GROUPS (the first of its kinds, in a random
                              # order, that applies) or None (any)

    @property
    def seed(self) -> list[int]:
        return [self.source, self.k, 0x45444954, self.split == "test", self.phrasing == "heldout"]


def edit_for(key: PairKey, spec: AssetSpec | None = None) -> EditPair | None:
    """The edit a key stands for (deterministic)."""
    spec = spec or sample_asset_spec(key.split, key.source)
    rng = np.random.default_rng(key.seed)
    if key.kind not in KIND_GROUPS:
        return sample_edit(spec, rng, key.split, key.phrasing, key.kind)
    for kind in rng.permutation(KIND_GROUPS[key.kind]):
        pair = sample_edit(spec, rng, key.split, key.phrasing, str(kind))
        if pair is not None:
            return pair
    # a source without a rare edit gets any edit; one without a structure edit gets none
    return sample_edit(spec, rng, key.split, key.phrasing) if key.kind == "rare" else None


def source_points(spec: AssetSpec, key: PairKey) -> np.ndarray:
    return surface_points(Asset(spec), N_POINTS, np.random.default_rng([*key.seed[:1], 0x53524345, key.split == "test"]))


def target_points(pair: EditPair, before_pts: np.ndarray, seed: list[int]) -> np.ndarray:
    """Source points that stay on the target's surface, plus fresh target samples where it moved."""
    before, after = Asset(pair.before), Asset(pair.after)
    keep = np.abs(after.query(before_pts, with_colour=False)[0]) < ON_SURFACE
    fresh = surface_points(after, N_POINTS, np.random.default_rng(seed))
    new = np.abs(before.query(fresh, with_colour=False)[0]) >= ON_SURFACE
    if keep.all() and not new.any():
        return before_pts
    pts = np.concatenate([before_pts[keep], fresh[new]])
    if len(pts) > N_POINTS:  # keep the cloud's density the same as the source's
        pts = pts[np.random.default_rng(seed).permutation(len(pts))[:N_POINTS]]
    return pts


def pair_clouds(key: PairKey, pair: EditPair, before_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    after_pts = target_points(pair, before_pts, [*key.seed, 1])
    return coloured_cloud(Asset(pair.before), before_pts), coloured_cloud(Asset(pair.after), after_pts)


def source_edits(split: str, index: int, per_source: int, phrasing: str = "train", spec: AssetSpec | None = None,
                 group: str | None = None):
    """(key, pair) for each edit of one source asset that exists, in the training set's order:
    any kind and a rare one in turn, or each of `group`'s kinds (KIND_GROUPS)."""
    spec = spec or sample_asset_spec(split, index)
    for k in range(per_source):
        key = PairKey(split, index, k, phrasing, group or ("rare" if k % 2 else None))
        pair = edit_for(key, spec)
        if pair is not None:
            yield key, pair


def replayed_pairs(pairs: list[dict], n_sources: int, per_source: int = EDITS_PER_SOURCE, first: int = 0,
                   group: str | None = None) -> list[EditPair]:
    """The EditPair of each cached pair, replayed from its key (about 1.5 ms each): cached clouds
    get new phrasings and their edit's details without a rebuild (templates are drawn last,
    after the edit itself)."""
    replayed = [(key.source, pair) for i in range(first, first + n_sources)
                for key, pair in source_edits("train", i, per_source, group=group)]
    if len(replayed) != len(pairs) or any((src, EDIT_KINDS.index(pair.kind)) != (p["source"], p["kind"])
                                          for (src, pair), p in zip(replayed, pairs)):
        raise RuntimeError("cached edit pairs do not match the procedural world: delete the cache and rebuild")
    return [pair for _, pair in replayed]


def instruction_variants(pairs: list[dict], n_sources: int, per_source: int = EDITS_PER_SOURCE) -> list[list[str]]:
    """Every training template of each pair's edit, filled with the pair's own words."""
    return [pair.phrasings() for pair in replayed_pairs(pairs, n_sources, per_source)]


def _source_record(args) -> list[dict]:
    """All edit pairs of one source asset: clouds (float16), instruction, kind."""
    split, index, per_source, phrasing, group = args
    spec = sample_asset_spec(split, index)
    pts = None
    out = []
    for key, pair in source_edits(split, index, per_source, phrasing, spec, group):
        if pts is None:
            pts = source_points(spec, key)
        src, tgt = pair_clouds(key, pair, pts)
        out.append({"source": index, "kind": EDIT_KINDS.index(pair.kind), "instruction": pair.instruction,
                    "src": src.astype(np.float16), "tgt": tgt.astype(np.float16)})
    return out


def build_pairs(split: str, n_sources: int, per_source: int = EDITS_PER_SOURCE, phrasing: str = "train",
                workers: int = 2, first: int = 0, group: str | None = None) -> list[dict]:
    jobs = [(split, i, per_source, phrasing, group) for i in range(first, first + n_sources)]
    groups = parallel_map(_source_record, jobs, workers, chunksize=8, label=f"{split} edit sources")
    return [r for g in groups for r in g]


def load_or_build_pairs(n_sources: int, cache_dir: str, per_source: int = EDITS_PER_SOURCE,
                        workers: int = 2, first: int = 0, group: str | None = None) -> list[dict]:
    """Training pairs of sources first .. first + n_sources - 1 (edits of `group`'s kinds, or the
    usual mix), cached as one .npz (clouds are ragged: stored concatenated with offsets)."""
    name = f"{n_sources}x{per_source}"
    if group is not None or first:
        name = f"{group or 'mix'}_{first}+{name}"
    path = os.path.join(cache_dir, f"edit_train_{name}_v{PAIRS_VERSION}.npz")
    if os.path.exists(path):
        with np.load(path) as z:
            z = {k: z[k] for k in z.files}  # NpzFile re-reads an array on every access: read each once
        src, tgt, src_off, tgt_off = z["src"], z["tgt"], z["src_off"], z["tgt_off"]
        return [{"source": int(z["source"][i]), "kind": int(z["kind"][i]), "instruction": str(z["instruction"][i]),
                 "src": src[src_off[i]:src_off[i + 1]], "tgt": tgt[tgt_off[i]:tgt_off[i + 1]]}
                for i in range(len(z["kind"]))]
    pairs = build_pairs("train", n_sources, per_source, workers=workers, first=first, group=group)
    os.makedirs(cache_dir, exist_ok=True)
    offsets = {k: np.cumsum([0] + [len(p[k]) for p in pairs]) for k in ("src", "tgt")}
    np.savez(path + ".tmp.npz", source=np.array([p["source"] for p in pairs]), kind=np.array([p["kind"] for p in pairs]),
             instruction=np.array([p["instruction"] for p in pairs]),
             src=np.concatenate([p["src"] for p in pairs]), tgt=np.concatenate([p["tgt"] for p in pairs]),
             src_off=offsets["src"], tgt_off=offsets["tgt"])
    os.replace(path + ".tmp.npz", path)
    return pairs
