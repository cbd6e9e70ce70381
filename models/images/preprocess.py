"""An input image -> the reconstructor's input: the object cut out, centred and scaled.

Expected input (README, model card): one object, roughly centred and filling most of the
frame, on a transparent or plain background. The background is estimated from the image's
border (no segmentation model to download): pixels far from the border's median colour are
the object. The object's bounding square (its larger side filling FILL of the crop) is resized
to the model's resolution, composited on white, with the alpha as a fourth channel. Training
renders go through exactly this function, so whatever it does to a user's image it also did
to every training image.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

FILL = 0.85               # the object's larger side as a share of the crop
BORDER = 2                # pixels of border that estimate the background colour
ALPHA_LOW, ALPHA_HIGH = 0.06, 0.14   # colour distance to the background: 0 -> 1 alpha ramp
MIN_COVERAGE = 0.002      # below this share of object pixels there is nothing to reconstruct


class NoObjectError(ValueError):
    code = "bad_input"


def estimate_alpha(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) in [0, 1] -> alpha (H, W) from the distance to the border's median colour."""
    border = np.concatenate([rgb[:BORDER].reshape(-1, 3), rgb[-BORDER:].reshape(-1, 3),
                             rgb[:, :BORDER].reshape(-1, 3), rgb[:, -BORDER:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    dist = np.abs(rgb - bg).max(-1)
    return np.clip((dist - ALPHA_LOW) / (ALPHA_HIGH - ALPHA_LOW), 0.0, 1.0).astype(np.float32)


def object_alpha(image: np.ndarray) -> np.ndarray:
    """The image's own alpha when it has a meaningful one, else the border estimate."""
    if image.shape[-1] == 4 and image[..., 3].min() < 0.98:
        return image[..., 3].astype(np.float32)
    return estimate_alpha(image[..., :3])


def crop_box(alpha: np.ndarray) -> tuple[float, float, float]:
    """(centre row, centre column, side) of the square crop around the object."""
    rows, cols = np.nonzero(alpha > 0.5)
    if len(rows) < max(4, MIN_COVERAGE * alpha.size):
        raise NoObjectError("no object found in the image: it looks like a plain background (use one object "
                            "on a plain or transparent background)")
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = max(bottom - top, right - left) / FILL
    return (top + bottom) / 2.0, (left + right) / 2.0, float(side)


def prepare_image(image: np.ndarray, size: int = 64) -> np.ndarray:
    """(H, W, 3 or 4) float in [0, 1] -> (4, size, size) float32: RGB on white, alpha."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    alpha = object_alpha(image)
    rgb = image[..., :3] * alpha[..., None] + (1.0 - alpha[..., None])
    cy, cx, side = crop_box(alpha)
    rgba = torch.from_numpy(np.concatenate([rgb, alpha[..., None]], -1)).permute(2, 0, 1)[None]
    # crop (padding with white, alpha 0, where the square leaves the image) by an affine resample
    h, w = alpha.shape
    theta = torch.tensor([[[side / w, 0.0, (2 * cx - w) / w], [0.0, side / h, (2 * cy - h) / h]]], dtype=torch.float32)
    # supersample, then area-average: no aliasing whatever the crop's size in pixels
    k = int(np.clip(np.ceil(side / size), 1, 8))
    grid = F.affine_grid(theta, (1, 4, size * k, size * k), align_corners=False)
    pad = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 4, 1, 1)
    out = F.grid_sample(rgba - pad, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + pad
    if k > 1:
        out = F.avg_pool2d(out, k)
    return out[0].numpy()


def crop_window(alpha: np.ndarray, camera_half: float = 1.0) -> tuple[float, float, float]:
    """The crop of `prepare_image` in a square image's normalised coordinates ([-1, 1], y up):
    (centre x, centre y, half side) times `camera_half`; used to point the refinement's
    orthographic camera at the same window."""
    h, w = alpha.shape
    cy, cx, side = crop_box(alpha)
    return ((2 * cx / w - 1.0) * camera_half, (1.0 - 2 * cy / h) * camera_half, side / w * camera_half)
