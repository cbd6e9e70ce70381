"""AssetSpec (the symbolic description of one asset) and Asset (its compiled,
queryable SDF + colour field)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from .categories import CATEGORIES, CATEGORY_NAMES, Category
from .palette import COLOUR_NAMES, COLOURS, PATTERNS, pattern_mask
from .primitives import BOX, CAPSULE, CONE, CYLINDER, ELLIPSOID, TORUS, PrimitiveTable
from .shapes import GROUND
from .split import allowed_colour, split_code

CUBE_LIMIT = 0.97  # assets stay inside [-0.97, 0.97]^3 so the surface never touches the grid edge


@dataclass
class AssetSpec:
    """Everything that defines an asset. Edits are exact operations on this."""

    category: str
    params: dict
    colours: dict                      # part -> colour name
    patterns: dict = field(default_factory=dict)  # part -> (pattern, secondary colour name)
    scale: tuple = (1.0, 1.0, 1.0)     # about (0, 0, GROUND)

    @property
    def cat(self) -> Category:
        return CATEGORIES[self.category]

    def copy(self) -> "AssetSpec":
        return copy.deepcopy(self)

    def parts(self) -> list[str]:
        return self.cat.part_names(self.params)

    def main_colour(self) -> str:
        """The colour covering the most of the asset (parts weighted by their bounding volume)."""
        weight: dict[str, float] = {}
        for part, prims in self.cat.build(self.params).items():
            vol = sum(float(np.prod(_aabb_half(p.kind, p.params))) for p in prims if not p.subtract)
            weight[self.colours[part]] = weight.get(self.colours[part], 0.0) + vol
        return max(weight, key=weight.get)

    def to_dict(self) -> dict:
        return {"category": self.category, "params": dict(self.params), "colours": dict(self.colours),
                "patterns": {k: list(v) for k, v in self.patterns.items()}, "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict) -> "AssetSpec":
        return cls(d["category"], dict(d["params"]), dict(d["colours"]),
                   {k: tuple(v) for k, v in d.get("patterns", {}).items()}, tuple(d.get("scale", (1, 1, 1))))


def _aabb_half(kind: int, prm) -> np.ndarray:
    a, b, c = (tuple(prm) + (0.0, 0.0))[:3]
    return np.array({
        BOX: (a, b, c), ELLIPSOID: (a, b, c), CYLINDER: (a, a, b), CONE: (max(a, b), max(a, b), c),
        TORUS: (a + b, a + b, b), CAPSULE: (a, a, b + a)}[kind], dtype=np.float32)


class Asset:
    """A compiled asset: query signed distance and colour at any points."""

    def __init__(self, spec: AssetSpec):
        self.spec = spec
        parts = spec.cat.build(spec.params)
        self.part_names = list(parts)
        prims, part_of = [], []
        for i, name in enumerate(self.part_names):
            for prim in parts[name]:
                prims.append(prim)
                part_of.append(i)
        add = [k for k, p in enumerate(prims) if not p.subtract]
        sub = [k for k, p in enumerate(prims) if p.subtract]
        self.additive = PrimitiveTable.pack([prims[k] for k in add])
        self.subtractive = PrimitiveTable.pack([prims[k] for k in sub])
        self.part_of = np.array([part_of[k] for k in add], dtype=np.int64)
        self.scale = np.asarray(spec.scale, dtype=np.float32)
        self.anchor = np.array([0.0, 0.0, GROUND], dtype=np.float32)
        self._part_rgb = np.array([COLOURS[spec.colours[n]] for n in self.part_names], dtype=np.float32)
        self._prims = [prims[k] for k in add]

    @cached_property
    def bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned bounds (conservative for rotated primitives)."""
        lo, hi = np.full(3, np.inf, np.float32), np.full(3, -np.inf, np.float32)
        for p in self._prims:
            half = np.abs(p.rotation) @ _aabb_half(p.kind, p.params)
            c = np.asarray(p.centre, np.float32)
            lo, hi = np.minimum(lo, c - half), np.maximum(hi, c + half)
        return np.stack([(lo - self.anchor) * self.scale + self.anchor, (hi - self.anchor) * self.scale + self.anchor])

    def fits(self) -> bool:
        return bool(np.all(np.abs(self.bounds) <= CUBE_LIMIT))

    def _local(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, np.float32) - self.anchor) / self.scale + self.anchor

    def query(self, points: np.ndarray, with_colour: bool = True):
        """(N, 3) points -> signed distance (N,) [negative inside] and RGB (N, 3) in [0, 1]."""
        q = self._local(points)
        d = self.additive.distances(q)
        nearest = np.argmin(d, axis=1)
        sdf = np.take_along_axis(d, nearest[:, None], axis=1)[:, 0]
        if len(self.subtractive.kinds):
            sdf = np.maximum(sdf, -self.subtractive.distances(q).min(axis=1))
        sdf = sdf * float(self.scale.min())  # keeps a valid distance bound under non-uniform scale
        if not with_colour:
            return sdf, None
        part = self.part_of[nearest]
        rgb = self._part_rgb[part]
        for name, (_, secondary) in self.spec.patterns.items():
            mask = self._pattern_mask(q, part, name)
            rgb = np.where(mask[:, None], np.asarray(COLOURS[secondary], np.float32)[None], rgb)
        return sdf, rgb

    def _pattern_mask(self, q: np.ndarray, part: np.ndarray, name: str) -> np.ndarray:
        """Local points q of which `part` holds the index: those painted with part `name`'s pattern."""
        mask = np.zeros(len(q), dtype=bool)
        if name in self.part_names:
            sel = part == self.part_names.index(name)
            mask[sel] = pattern_mask(self.spec.patterns[name][0], q[sel])
        return mask

    def part_labels(self, points: np.ndarray) -> np.ndarray:
        """Index into `part_names` of the part nearest each point."""
        d = self.additive.distances(self._local(points))
        return self.part_of[np.argmin(d, axis=1)]

    def pattern_points(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the points painted with their part's pattern colour rather than its own."""
        q, part = self._local(points), self.part_labels(points)
        mask = np.zeros(len(q), dtype=bool)
        for name in self.spec.patterns:
            mask |= self._pattern_mask(q, part, name)
        return mask

    def pattern_masks(self, points: np.ndarray) -> np.ndarray:
        """(N, len(PATTERNS) - 1) bool: whether each point would be painted by each pattern
        (stripes, checker, dots) on whatever part it lies, as adding that pattern would paint it."""
        q = self._local(points)
        return np.stack([pattern_mask(p, q) for p in PATTERNS[1:]], axis=1)


# ---------------------------------------------------------------- sampling


def _sample_colours(cat: Category, parts: list[str], rng: np.random.Generator, split: str) -> dict:
    """A main colour for the whole asset, and sometimes one or two accent parts."""
    allowed = [c for c in COLOUR_NAMES if allowed_colour(cat.name, c, split)]
    main = allowed[int(rng.integers(len(allowed)))]
    colours = {p: main for p in parts}
    n_accent = int(rng.choice([0, 0, 1, 1, 2])) if len(parts) > 1 else 0
    for p in rng.permutation(parts)[:n_accent]:
        others = [c for c in allowed if c != main]
        colours[str(p)] = others[int(rng.integers(len(others)))]
    return colours


TARGET_EXTENT = 1.45  # typical largest dimension of an asset, in a cube of side 2


@lru_cache(maxsize=None)
def base_scale(category: str) -> float:
    """Scale that makes a typical asset of `category` about TARGET_EXTENT across,
    so every category uses the cube's resolution alike (fixed seed: a constant)."""
    cat = CATEGORIES[category]
    rng = np.random.default_rng(1234)
    extents = []
    for _ in range(64):
        params = {p.name: p.sample(rng) for p in cat.params}
        b = Asset(AssetSpec(category, params, {n: "grey" for n in cat.part_names(params)})).bounds
        extents.append(float(np.max(b[1] - b[0])))
    return round(TARGET_EXTENT / float(np.median(extents)), 3)


def sample_spec(category: str, rng: np.random.Generator, split: str = "train") -> AssetSpec:
    cat = CATEGORIES[category]
    base = base_scale(category)
    for _ in range(100):
        params = {p.name: p.sample(rng) for p in cat.params}
        parts = cat.part_names(params)
        colours = _sample_colours(cat, parts, rng, split)
        patterns = {}
        if cat.pattern_parts and rng.random() < 0.25:
            part = cat.pattern_parts[int(rng.integers(len(cat.pattern_parts)))]
            pattern = PATTERNS[1 + int(rng.integers(len(PATTERNS) - 1))]
            second = [c for c in COLOUR_NAMES if c != colours[part] and allowed_colour(category, c, split)]
            patterns[part] = (pattern, second[int(rng.integers(len(second)))])
        s = base * float(rng.uniform(0.85, 1.1))
        spec = AssetSpec(category, params, colours, patterns, (s, s, s))
        if Asset(spec).fits():
            return spec
    raise RuntimeError(f"could not sample a {category} that fits the cube")


def asset_rng(split: str, index: int) -> np.random.Generator:
    """Deterministic generator for asset `index` of a split; the streams never overlap."""
    return np.random.default_rng([split_code(split), int(index), 0x4B494C4E])


def first_index_of(category: str, start: int) -> int:
    """The first asset index >= start of `category` in either stream (categories go round-robin,
    so every len(CATEGORY_NAMES)-th index after it is one too)."""
    return start + (CATEGORY_NAMES.index(category) - start) % len(CATEGORY_NAMES)


def sample_asset_spec(split: str, index: int) -> AssetSpec:
    """Asset `index` of `split` ('train' | 'test'): category round-robin, the rest from the seed."""
    rng = asset_rng(split, index)
    return sample_spec(CATEGORY_NAMES[index % len(CATEGORY_NAMES)], rng, split)
