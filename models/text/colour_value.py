"""Colours written as values in an instruction or a prompt: "make the seat #3a7bd5",
"rgb(255, 128, 0) stripes", "a #3a7bd5 chair".

A pipeline TD or an artist with a colour picker names an exact colour, not a word. The sentence
encoder cannot read a hex code, so the text is read with the value replaced by the name of its
nearest palette colour ("make the seat blue": which edit, which part). An edit then paints the
value itself (`models/edit/recolour.grounded_recolour`'s `colour`); generation knows the
palette's colours only and makes the nearest, with a warning. Values are sRGB, as colour pickers
and hex codes give them; the palette's colours are compared in the same space.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..world.palette import nearest_colour

# "#rgb" or "#rrggbb" (not followed by more of a word), or "rgb(r, g, b)" with channels 0-255
VALUE = re.compile(r"#(?P<hex>[0-9a-f]{6}|[0-9a-f]{3})(?![0-9a-z])"
                   r"|\brgb\s*\(\s*(?P<r>\d{1,3})\s*,\s*(?P<g>\d{1,3})\s*,\s*(?P<b>\d{1,3})\s*\)", re.IGNORECASE)


@dataclass(frozen=True)
class ColourValue:
    reading: str                                    # the instruction as the models read it
    rgb: tuple[float, float, float] | None = None   # the first value written, in [0, 1]; None: none


def _value(m: re.Match) -> tuple[float, float, float] | None:
    if m.group("hex"):
        digits = m.group("hex")
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return tuple(int(digits[i:i + 2], 16) / 255.0 for i in (0, 2, 4))
    channels = [int(m.group(k)) for k in "rgb"]
    return None if max(channels) > 255 else tuple(c / 255.0 for c in channels)


def colour_value(instruction: str) -> ColourValue:
    """The instruction with each colour value (#rgb, #rrggbb, rgb(r, g, b)) replaced by its
    nearest palette colour's name, and the first value's RGB. An rgb() with a channel above 255
    is not a colour value and is left as written."""
    found = []

    def named(m: re.Match) -> str:
        rgb = _value(m)
        if rgb is None:
            return m.group(0)
        found.append(rgb)
        return nearest_colour(np.asarray(rgb, np.float32))

    reading = VALUE.sub(named, instruction)
    return ColourValue(reading, found[0]) if found else ColourValue(instruction)


def hex_code(rgb) -> str:
    """RGB in [0, 1] -> "#rrggbb"."""
    return "#" + "".join(f"{round(min(max(float(c), 0.0), 1.0) * 255):02x}" for c in rgb[:3])
