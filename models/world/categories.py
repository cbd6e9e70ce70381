"""The object categories of the procedural world.

Each category is a parameter space (continuous sizes, integer counts, optional
parts) and a pure builder from parameters to named parts made of SDF
primitives. Sizes are in asset units: the cube is [-1, 1]^3, the object stands
on z = GROUND and its front faces -Y.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .primitives import Primitive, rot_x, rot_y, rot_z
from .shapes import GROUND as Z0
from .shapes import box, cone, cylinder, ellipsoid, torus

Parts = dict[str, list[Primitive]]


@dataclass(frozen=True)
class Param:
    name: str
    low: float = 0.0
    high: float = 1.0
    choices: tuple = ()  # integer counts or booleans; empty for a float range

    def sample(self, rng: np.random.Generator):
        if self.choices:
            return self.choices[int(rng.integers(len(self.choices)))]
        return float(rng.uniform(self.low, self.high))


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]            # training nouns (first is canonical)
    heldout_nouns: tuple[str, ...]    # only in held-out phrasings
    params: tuple[Param, ...]
    build: Callable[[dict], Parts]
    optional_parts: dict = field(default_factory=dict)   # part -> bool param
    counts: dict = field(default_factory=dict)           # counted noun -> (int param, part it builds)
    part_sizes: dict = field(default_factory=dict)       # part -> (param, word for up, word for down)
    pattern_parts: tuple[str, ...] = ()
    part_nouns: dict = field(default_factory=dict)       # part -> how captions name it

    @property
    def param_by_name(self) -> dict[str, Param]:
        return {p.name: p for p in self.params}

    def part_names(self, params: dict) -> list[str]:
        return list(self.build(params).keys())

    def noun_for(self, part: str) -> str:
        return self.part_nouns.get(part, part)

    def count_of(self, noun: str, params: dict) -> int:
        """How many of `noun` the asset has, or 0 when the count does not apply
        (part absent, or the count parameter has no effect, as for a round tree's tiers)."""
        param, part = self.counts[noun]
        n = len(self.build(params).get(part, []))
        if n == 0 or n != params[param]:
            return 0
        other = next((c for c in self.param_by_name[param].choices if c and c != n), None)
        changes = other is not None and len(self.build({**params, param: other}).get(part, [])) != n
        return n if changes else 0


# ---------------------------------------------------------------- builders


def _chair(p: dict) -> Parts:
    w, d, h, t, lt = p["seat_width"], p["seat_depth"], p["seat_height"], 0.07, p["leg_thickness"]
    top = Z0 + h
    leg_h = (h - t) / 2
    xs, ys = w / 2 - lt / 2 - 0.02, d / 2 - lt / 2 - 0.02
    parts: Parts = {
        "seat": [box((0, 0, top - t / 2), (w / 2, d / 2, t / 2), 0.02)],
        "legs": [box((sx * xs, sy * ys, Z0 + leg_h), (lt / 2, lt / 2, leg_h)) for sx in (-1, 1) for sy in (-1, 1)],
        "back": [box((0, d / 2 - 0.035, top + p["back_height"] / 2), (w / 2, 0.035, p["back_height"] / 2), 0.02)],
    }
    if p["armrests"]:
        ah = 0.2
        parts["armrests"] = [box((sx * (w / 2 - 0.03), 0, top + ah), (0.035, d / 2, 0.03)) for sx in (-1, 1)] + [
            box((sx * (w / 2 - 0.03), -d / 2 + 0.035, top + ah / 2), (0.03, 0.03, ah / 2)) for sx in (-1, 1)]
    return parts


def _table(p: dict) -> Parts:
    w, d, h, t, lt = p["top_width"], p["top_depth"], p["height"], p["top_thickness"], p["leg_thickness"]
    leg_h = (h - t) / 2
    xs = w / 2 - lt / 2 - 0.04
    ys = d / 2 - lt / 2 - 0.04
    x_positions = (-xs, xs) if p["legs"] == 4 else (-xs, 0.0, xs)
    return {
        "top": [box((0, 0, Z0 + h - t / 2), (w / 2, d / 2, t / 2), 0.02)],
        "legs": [box((x, sy * ys, Z0 + leg_h), (lt / 2, lt / 2, leg_h)) for x in x_positions for sy in (-1, 1)],
    }


def _stool(p: dict) -> Parts:
    r, h, t, lr = p["seat_radius"], p["seat_height"], 0.07, p["leg_radius"]
    ring = r * 0.72
    angles = np.arange(p["legs"]) * 2 * np.pi / p["legs"] + np.pi / 4
    leg_h = (h - t) / 2
    parts: Parts = {
        "seat": [cylinder((0, 0, Z0 + h - t / 2), r, t / 2)],
        "legs": [cylinder((ring * np.cos(a), ring * np.sin(a), Z0 + leg_h), lr, leg_h) for a in angles],
    }
    if p["footrest"]:
        parts["footrest"] = [torus((0, 0, Z0 + h * 0.35), ring, 0.022)]
    return parts


def _lamp(p: dict) -> Parts:
    bh, ph, sh = p["base_height"], p["pole_height"], p["shade_height"]
    sr = p["shade_radius"]
    return {
        "base": [cylinder((0, 0, Z0 + bh / 2), p["base_radius"], bh / 2)],
        "pole": [cylinder((0, 0, Z0 + bh + ph / 2), p["pole_radius"], ph / 2)],
        "shade": [cone((0, 0, Z0 + bh + ph), sr, sr * p["shade_taper"], sh / 2)],
    }


def _mug(p: dict) -> Parts:
    r, h = p["body_radius"], p["body_height"]
    zc = Z0 + h / 2
    parts: Parts = {
        "body": [cylinder((0, 0, zc), r, h / 2),
                 cylinder((0, 0, zc + 0.07), r - 0.05, h / 2, subtract=True)],
    }
    if p["handle"]:
        hr = p["handle_size"]
        parts["handle"] = [torus((r + hr * 0.45, 0, zc), hr, 0.04, rotation=rot_x(np.pi / 2))]
    return parts


def _vase(p: dict) -> Parts:
    rb, hb, nr, nh = p["body_radius"], p["body_half_height"], p["neck_radius"], p["neck_height"]
    zb = Z0 + hb
    return {
        "body": [ellipsoid((0, 0, zb), (rb, rb, hb))],
        "neck": [cylinder((0, 0, zb + hb * 0.8 + nh / 2), nr, nh / 2 + hb * 0.1),
                 torus((0, 0, zb + hb * 0.8 + nh + hb * 0.1), nr, 0.025)],
    }


def _bottle(p: dict) -> Parts:
    r, h, nr, nh, sh = p["body_radius"], p["body_height"], p["neck_radius"], p["neck_height"], 0.18
    z_top = Z0 + h
    return {
        "body": [cylinder((0, 0, Z0 + h / 2), r, h / 2), cone((0, 0, z_top + sh / 2), r, nr, sh / 2)],
        "neck": [cylinder((0, 0, z_top + sh + nh / 2), nr, nh / 2 + 0.01)],
        "cap": [cylinder((0, 0, z_top + sh + nh + 0.04), nr + 0.015, 0.04)],
    }


def _car(p: dict) -> Parts:
    w, length, bh, wr = p["width"], p["length"], p["body_height"], p["wheel_radius"]
    zb = Z0 + wr * 0.9 + bh / 2
    ch, cl = p["cabin_height"], p["cabin_length"] * length
    ys = length / 2 - wr - 0.06
    wheel_y = (-ys, ys) if p["wheels"] == 4 else (-ys, ys - 2 * wr - 0.04, ys)
    wheel_rot = rot_y(np.pi / 2)  # cylinder axis along X
    parts: Parts = {
        "body": [box((0, 0, zb), (w / 2, length / 2, bh / 2), 0.06)],
        "cabin": [box((0, length * 0.08, zb + bh / 2 + ch / 2 - 0.02), (w / 2 * 0.85, cl / 2, ch / 2), 0.06)],
        "wheels": [cylinder((sx * (w / 2 - 0.02), y, Z0 + wr), wr, 0.06, rotation=wheel_rot)
                   for y in wheel_y for sx in (-1, 1)],
    }
    if p["spoiler"]:
        zs = zb + bh / 2 + 0.12
        parts["spoiler"] = [box((0, length / 2 - 0.07, zs), (w / 2 * 0.9, 0.06, 0.018))] + [
            box((sx * w * 0.3, length / 2 - 0.07, zs - 0.06), (0.02, 0.02, 0.06)) for sx in (-1, 1)]
    return parts


def _rocket(p: dict) -> Parts:
    r, h, nh, fs = p["body_radius"], p["body_height"], p["nose_height"], p["fin_size"]
    angles = np.arange(p["fins"]) * 2 * np.pi / p["fins"] + np.pi / 2
    fin_h = fs * 1.3
    parts: Parts = {
        "body": [cylinder((0, 0, Z0 + h / 2), r, h / 2)],
        "nose": [cone((0, 0, Z0 + h + nh / 2), r, 0.015, nh / 2)],
        "fins": [box(((r + fs / 2 - 0.02) * np.cos(a), (r + fs / 2 - 0.02) * np.sin(a), Z0 + fin_h / 2),
                     (fs / 2, 0.022, fin_h / 2), rotation=rot_z(a)) for a in angles],
    }
    if p["window"]:
        parts["window"] = [cylinder((0, -r, Z0 + h * 0.62), r * 0.4, 0.03, rotation=rot_x(np.pi / 2))]
    return parts


def _tree(p: dict) -> Parts:
    tr, th, fr, fh = p["trunk_radius"], p["trunk_height"], p["foliage_radius"], p["foliage_height"]
    z = Z0 + th
    if p["round"]:
        foliage = [ellipsoid((0, 0, z + fh / 2 - 0.05), (fr, fr, fh / 2))]
    else:
        tiers = p["tiers"]
        tier_h = fh / (1 + 0.6 * (tiers - 1))
        foliage = [cone((0, 0, z - 0.04 + i * 0.6 * tier_h + tier_h / 2), fr * (1 - 0.18 * i), 0.02, tier_h / 2)
                   for i in range(tiers)]
    return {"trunk": [cylinder((0, 0, Z0 + th / 2 + 0.02), tr, th / 2 + 0.02)], "foliage": foliage}


def _house(p: dict) -> Parts:
    w, d, wh = p["width"], p["depth"], p["wall_height"]
    top = Z0 + wh
    s = (d / 2 + 0.06) / np.sqrt(2)
    parts: Parts = {
        "walls": [box((0, 0, Z0 + wh / 2), (w / 2, d / 2, wh / 2), 0.01)],
        "roof": [box((0, 0, top), (w / 2 + 0.06, s, s), 0.01, rotation=rot_x(np.pi / 4))],
        "door": [box((0, -d / 2, Z0 + 0.19), (0.1, 0.025, 0.19), 0.01)],
    }
    n = p["windows"]
    if n:
        xs = (-w / 4 - 0.04, w / 4 + 0.04)
        zs = (Z0 + wh * 0.6,) if n == 2 else (Z0 + wh * 0.35, Z0 + wh * 0.75)
        parts["windows"] = [box((x, -d / 2, z), (0.08, 0.025, 0.07 if n == 4 else 0.09), 0.01) for z in zs for x in xs]
    if p["chimney"]:
        parts["chimney"] = [box((w / 4, d / 6, top + d / 4 + 0.1), (0.07, 0.07, d / 4 + 0.06), 0.01)]
    return parts


def _mushroom(p: dict) -> Parts:
    sr, sh, cr, ch = p["stem_radius"], p["stem_height"], p["cap_radius"], p["cap_half_height"]
    return {
        "stem": [cylinder((0, 0, Z0 + sh / 2), sr, sh / 2)],
        "cap": [ellipsoid((0, 0, Z0 + sh), (cr, cr, ch))],
    }


def _sword(p: dict) -> Parts:
    bl, bw, gl, gw = p["blade_length"], p["blade_width"], p["grip_length"], p["guard_width"]
    pr = 0.055
    z_grip = Z0 + 2 * pr - 0.01
    z_guard = z_grip + gl
    z_blade = z_guard + 0.05
    tip = bw / 2 / np.sqrt(2)
    return {
        "pommel": [ellipsoid((0, 0, Z0 + pr), (pr, pr, pr))],
        "grip": [cylinder((0, 0, z_grip + gl / 2), 0.035, gl / 2)],
        "guard": [box((0, 0, z_guard + 0.025), (gw / 2, 0.05, 0.025), 0.015)],
        "blade": [box((0, 0, z_blade + bl / 2), (bw / 2, 0.018, bl / 2), 0.008),
                  box((0, 0, z_blade + bl), (tip, 0.018, tip), 0.008, rotation=rot_y(np.pi / 4))],
    }


# ---------------------------------------------------------------- registry

F, B = Param, (False, True)

CATEGORIES: dict[str, Category] = {c.name: c for c in (
    Category("chair", ("chair", "dining chair", "side chair"), ("armchair",),
             (F("seat_width", 0.55, 0.85), F("seat_depth", 0.5, 0.75), F("seat_height", 0.45, 0.75),
              F("leg_thickness", 0.05, 0.09), F("back_height", 0.4, 0.8), F("armrests", choices=B)),
             _chair, optional_parts={"armrests": "armrests"},
             part_sizes={"legs": ("seat_height", "longer", "shorter"), "back": ("back_height", "taller", "shorter"),
                         "seat": ("seat_width", "wider", "narrower")},
             pattern_parts=("seat", "back")),
    Category("table", ("table", "desk", "dining table"), ("tabletop",),
             (F("top_width", 0.9, 1.6), F("top_depth", 0.6, 1.0), F("height", 0.5, 0.9),
              F("top_thickness", 0.05, 0.1), F("leg_thickness", 0.06, 0.12), F("legs", choices=(4, 6))),
             _table, counts={"legs": ("legs", "legs")}, part_sizes={"legs": ("height", "longer", "shorter"), "top": ("top_width", "wider", "narrower")},
             pattern_parts=("top",), part_nouns={"top": "tabletop"}),
    Category("stool", ("stool", "bar stool", "footstool"), ("tabouret",),
             (F("seat_radius", 0.22, 0.38), F("seat_height", 0.5, 1.0), F("leg_radius", 0.025, 0.045),
              F("legs", choices=(3, 4)), F("footrest", choices=B)),
             _stool, optional_parts={"footrest": "footrest"}, counts={"legs": ("legs", "legs")},
             part_sizes={"legs": ("seat_height", "longer", "shorter"), "seat": ("seat_radius", "bigger", "smaller")}, pattern_parts=("seat",)),
    Category("lamp", ("lamp", "table lamp", "floor lamp"), ("light",),
             (F("base_radius", 0.2, 0.35), F("base_height", 0.04, 0.1), F("pole_height", 0.6, 1.05),
              F("pole_radius", 0.02, 0.04), F("shade_radius", 0.25, 0.45), F("shade_taper", 0.4, 0.8),
              F("shade_height", 0.25, 0.45)),
             _lamp, part_sizes={"pole": ("pole_height", "longer", "shorter"), "shade": ("shade_radius", "bigger", "smaller"),
                         "base": ("base_radius", "wider", "narrower")},
             pattern_parts=("shade",), part_nouns={"shade": "lampshade"}),
    Category("mug", ("mug", "cup", "coffee mug"), ("tankard",),
             (F("body_radius", 0.35, 0.55), F("body_height", 0.7, 1.2), F("handle_size", 0.15, 0.25),
              F("handle", choices=(True, True, False))),
             _mug, optional_parts={"handle": "handle"}, part_sizes={"handle": ("handle_size", "bigger", "smaller"), "body": ("body_height", "taller", "shorter")},
             pattern_parts=("body",)),
    Category("vase", ("vase", "flower vase", "urn"), ("amphora",),
             (F("body_radius", 0.3, 0.55), F("body_half_height", 0.3, 0.5), F("neck_radius", 0.1, 0.2),
              F("neck_height", 0.2, 0.5)),
             _vase, part_sizes={"neck": ("neck_height", "longer", "shorter"), "body": ("body_radius", "wider", "narrower")}, pattern_parts=("body",)),
    Category("bottle", ("bottle", "flask", "water bottle"), ("carafe",),
             (F("body_radius", 0.2, 0.35), F("body_height", 0.6, 0.9), F("neck_radius", 0.07, 0.12),
              F("neck_height", 0.15, 0.35)),
             _bottle, part_sizes={"neck": ("neck_height", "longer", "shorter"), "body": ("body_height", "taller", "shorter")}, pattern_parts=("body",)),
    Category("car", ("car", "automobile", "sports car"), ("motorcar",),
             (F("width", 0.6, 0.8), F("length", 1.2, 1.7), F("body_height", 0.22, 0.35),
              F("wheel_radius", 0.14, 0.22), F("cabin_height", 0.18, 0.3), F("cabin_length", 0.4, 0.65),
              F("wheels", choices=(4, 4, 6)), F("spoiler", choices=B)),
             _car, optional_parts={"spoiler": "spoiler"}, counts={"wheels": ("wheels", "wheels")},
             part_sizes={"wheels": ("wheel_radius", "bigger", "smaller"), "cabin": ("cabin_height", "taller", "lower"),
                         "body": ("length", "longer", "shorter")},
             pattern_parts=("body",)),
    Category("rocket", ("rocket", "spaceship", "rocket ship"), ("missile",),
             (F("body_radius", 0.15, 0.25), F("body_height", 0.7, 1.1), F("nose_height", 0.25, 0.45),
              F("fin_size", 0.15, 0.3), F("fins", choices=(3, 4)), F("window", choices=B)),
             _rocket, optional_parts={"window": "window"}, counts={"fins": ("fins", "fins")},
             part_sizes={"fins": ("fin_size", "bigger", "smaller"), "nose": ("nose_height", "longer", "shorter"),
                         "body": ("body_height", "longer", "shorter")},
             pattern_parts=("body",), part_nouns={"nose": "nose cone"}),
    Category("tree", ("tree", "garden tree", "leafy tree"), ("sapling",),
             (F("trunk_radius", 0.06, 0.12), F("trunk_height", 0.3, 0.6), F("foliage_radius", 0.35, 0.6),
              F("foliage_height", 0.55, 0.95), F("tiers", choices=(1, 2, 3)), F("round", choices=B)),
             _tree, counts={"tiers": ("tiers", "foliage")}, part_sizes={"trunk": ("trunk_height", "taller", "shorter"), "foliage": ("foliage_radius", "wider", "narrower")},
             pattern_parts=("foliage",), part_nouns={"foliage": "leaves"}),
    Category("house", ("house", "cottage", "little house"), ("cabin",),
             (F("width", 0.9, 1.4), F("depth", 0.7, 1.0), F("wall_height", 0.62, 0.9),
              F("windows", choices=(0, 2, 4)), F("chimney", choices=B)),
             _house, optional_parts={"chimney": "chimney"}, counts={"windows": ("windows", "windows")},
             part_sizes={"walls": ("wall_height", "taller", "lower")}, pattern_parts=("walls",)),
    Category("mushroom", ("mushroom", "toadstool", "fungus"), ("champignon",),
             (F("stem_radius", 0.08, 0.18), F("stem_height", 0.35, 0.75), F("cap_radius", 0.35, 0.65),
              F("cap_half_height", 0.18, 0.38)),
             _mushroom, part_sizes={"stem": ("stem_height", "longer", "shorter"), "cap": ("cap_radius", "bigger", "smaller")}, pattern_parts=("cap",)),
    Category("sword", ("sword", "longsword", "broadsword"), ("sabre",),
             (F("blade_length", 0.8, 1.15), F("blade_width", 0.08, 0.14), F("grip_length", 0.2, 0.3),
              F("guard_width", 0.25, 0.45)),
             _sword, part_sizes={"blade": ("blade_length", "longer", "shorter"), "guard": ("guard_width", "wider", "narrower"),
                         "grip": ("grip_length", "longer", "shorter")},
             pattern_parts=("blade",), part_nouns={"grip": "handle"}),
)}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)
