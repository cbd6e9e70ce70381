"""Reading a user's input image for the image -> 3D models (Kiln's own and the adapters)."""
from __future__ import annotations

import os
import re
import struct
import warnings
import zlib

import numpy as np

IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
MIN_SIDE = 8                    # smaller images hold no usable object
MAX_PIXELS = 64_000_000         # refused before decoding: a 20000x20000 header would need gigabytes
MAX_SIDE = 1024                 # larger images are shrunk while loading: the models see 64-512 px


class ImageInputError(ValueError):
    """An input image Kiln cannot use; `code` is the wire protocol's error code."""

    def __init__(self, message: str, code: str = "bad_input"):
        super().__init__(message)
        self.code = code


def _read_errors() -> tuple:
    """What Pillow raises on files that are not (whole) images: unknown format, truncated
    data, broken chunks, decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    return (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
            Image.DecompressionBombError, Image.DecompressionBombWarning)


def load_image(path: str):
    """-> a PIL image (fully read, upright, at most MAX_SIDE pixels on its long side); every
    failure is an ImageInputError with a clear message."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ImageInputError(f"image file not found: {path}", "not_found")
    if os.path.getsize(path) == 0:
        raise ImageInputError(f"image file is empty (0 bytes): {path}")
    name = os.path.basename(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # an error, not a log line
            with Image.open(path) as img:
                _check_size(img, name)  # from the header alone, before any pixel is decoded
                img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced scale
                img.load()
                return _upright_and_small(img)
    except ImageInputError:
        raise
    except _read_errors() as exc:
        if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            pixels = re.search(r"\((\d+) pixels\)", str(exc))  # Pillow names the size it refused
            size = f"{int(pixels.group(1)) / 1e6:.0f} megapixels, " if pixels else ""
            raise ImageInputError(f"image is too large ({size}refused as a possible decompression bomb): {name}; "
                                  f"use an image under {MAX_PIXELS // 1_000_000} megapixels") from None
        raise ImageInputError(f"could not read {name} as an image: {exc or type(exc).__name__}") from None


def _check_size(img, name: str) -> None:
    w, h = img.size
    if w < MIN_SIDE or h < MIN_SIDE:
        raise ImageInputError(f"image is too small ({w}x{h}): {name}")
    if w * h > MAX_PIXELS:
        raise ImageInputError(f"image is too large ({w}x{h}, {w * h / 1e6:.0f} megapixels): {name}; "
                              f"use an image under {MAX_PIXELS // 1_000_000} megapixels")


def _upright_and_small(img):
    """A loaded image turned by its EXIF orientation (phone photos) and shrunk to MAX_SIDE."""
    from PIL import ImageOps

    out = ImageOps.exif_transpose(img)  # a copy, turned when the file says so
    if max(out.size) > MAX_SIDE:
        if out.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):  # palette, 1-bit, 16-bit: resample smoothly
            out = out.convert("I" if out.mode.startswith("I;16") else "RGBA" if _has_alpha(out) else "RGB")
        out.thumbnail((MAX_SIDE, MAX_SIDE))
    return out


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info


def image_array(img) -> np.ndarray:
    """A PIL image -> float32 (H, W, 3), or (H, W, 4) when it has transparency, in [0, 1].
    Greyscale, palette, 16-bit, CMYK and the rest become RGB."""
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit integer or float greyscale
        grey = np.asarray(img).astype(np.float32)
        # integers use the 16-bit range (what PNG and TIFF store there); floats are taken as [0, 1]
        grey = np.clip(grey if img.mode == "F" else grey / 65535.0, 0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    rgb = np.asarray(img.convert("RGBA" if _has_alpha(img) else "RGB"), dtype=np.float32)
    return rgb / 255.0


def on_background(img, grey: float):
    """An RGBA/LA image composited over a plain background of the given grey level, as RGB."""
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (int(round(grey * 255)),) * 3 + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")
