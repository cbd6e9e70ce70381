"""Reading a user's input image for the image -> 3D adapters."""
from __future__ import annotations

import os

IMAGE_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class ImageInputError(ValueError):
    """An input image Kiln cannot use; `code` is the wire protocol's error code."""

    def __init__(self, message: str, code: str = "bad_input"):
        super().__init__(message)
        self.code = code


def load_image(path: str):
    """-> a PIL image (fully read); every failure is an ImageInputError with a clear message."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ImageInputError(f"image file not found: {path}", "not_found")
    if os.path.getsize(path) == 0:
        raise ImageInputError(f"image file is empty (0 bytes): {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.width < 8 or img.height < 8:
                raise ImageInputError(f"image is too small ({img.width}x{img.height}): {path}")
            return img.copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, ImageInputError):
            raise
        raise ImageInputError(f"could not read {os.path.basename(path)} as an image: {exc}") from None


def on_background(img, grey: float):
    """An RGBA/LA image composited over a plain background of the given grey level, as RGB."""
    from PIL import Image

    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (int(round(grey * 255)),) * 3 + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")
