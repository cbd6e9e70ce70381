"""The TripoSR system: image -> triplane scene code -> density/colour field -> mesh."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..mesh import Cancelled
from .modules import (
    DINOSingleImageTokenizer,
    NeRFMLP,
    Transformer1D,
    Triplane1DTokenizer,
    TriplaneNeRFRenderer,
    TriplaneUpsampleNetwork,
)

DEFAULT_THRESHOLD = 25.0   # TripoSR's density level for the mesh
BACKGROUND_GREY = 0.5      # TripoSR composites foregrounds over mid grey
FOREGROUND_RATIO = 0.85    # ... scaled to 85% of the frame (run.py's default)


class TripoSR(nn.Module):
    """Submodule names are TripoSR's (image_tokenizer, tokenizer, backbone, post_processor, decoder,
    renderer), so its state dict keys are TripoSR's checkpoint keys."""

    def __init__(self, cond_image_size: int, image_tokenizer: DINOSingleImageTokenizer,
                 tokenizer: Triplane1DTokenizer, backbone: Transformer1D, post_processor: TriplaneUpsampleNetwork,
                 decoder: NeRFMLP, renderer: TriplaneNeRFRenderer):
        super().__init__()
        self.cond_image_size = int(cond_image_size)
        self.image_tokenizer = image_tokenizer
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.post_processor = post_processor
        self.decoder = decoder
        self.renderer = renderer

    @property
    def device(self) -> torch.device:
        return self.tokenizer.embeddings.device

    # ------------------------------------------------------------ image in

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image -> (1, H, W, 3) float in [0, 1] at cond_image_size. An RGBA image is cropped to
        its foreground, padded to a square with the foreground at 85% and composited over mid grey
        (what TripoSR's run.py does after background removal); an RGB image is used as it is, so it
        should already show the object on a plain grey background."""
        img = _foreground_on_grey(image)
        t = torch.from_numpy(img)[None].permute(0, 3, 1, 2)
        t = F.interpolate(t, (self.cond_image_size, self.cond_image_size), mode="bilinear", align_corners=False,
                          antialias=True)
        return t.permute(0, 2, 3, 1).contiguous()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, cancel: Callable[[], bool] | None = None) -> torch.Tensor:
        """images (B, H, W, 3) in [0, 1] -> scene codes (B, 3, C, 2P, 2P)."""
        images = images.to(self.device, torch.float32)
        b = images.shape[0]
        tokens_img = self.image_tokenizer(images.permute(0, 3, 1, 2)[:, None])   # (B, 1, Ct, Nt)
        tokens_img = tokens_img.permute(0, 1, 3, 2).reshape(b, -1, tokens_img.shape[2])  # (B, Nt, Ct)
        tokens = self.tokenizer(b)
        tokens = self.backbone(tokens, encoder_hidden_states=tokens_img, cancel=cancel)
        return self.post_processor(self.tokenizer.detokenize(tokens))

    # ------------------------------------------------------------ field and mesh out

    @torch.inference_mode()
    def query(self, scene_code: torch.Tensor, points: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (N, 3) in TripoSR's frame -> density_act (N,), colour (N, 3)."""
        p = torch.as_tensor(points, dtype=torch.float32, device=scene_code.device)
        out = self.renderer.query_triplane(self.decoder, p, scene_code)
        return out["density_act"], out["color"]

    @torch.inference_mode()
    def density_grid(self, scene_code: torch.Tensor, resolution: int, chunk: int = 65536,
                     progress: Callable[[float, str], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> np.ndarray:
        """density_act on a resolution^3 grid spanning [-radius, radius]^3 (all points, as TripoSR does)."""
        r = self.renderer.radius
        axis = torch.linspace(-r, r, resolution, device=scene_code.device)
        out = np.empty(resolution ** 3, np.float32)
        plane = resolution * resolution
        step = max(1, chunk // plane)
        for i in range(0, resolution, step):
            if cancel is not None and cancel():
                raise Cancelled()
            xs = axis[i:i + step]
            pts = torch.stack(torch.meshgrid(xs, axis, axis, indexing="ij"), -1).reshape(-1, 3)
            out[i * plane:(i + len(xs)) * plane] = self.query(scene_code, pts)[0].float().cpu().numpy()
            if progress is not None:
                progress(min(1.0, (i + len(xs)) / resolution), f"density grid {resolution}^3")
        return out.reshape(resolution, resolution, resolution)

    def extract_mesh(self, scene_code: torch.Tensor, resolution: int = 256, threshold: float = DEFAULT_THRESHOLD,
                     progress: Callable[[float, str], None] | None = None,
                     cancel: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Marching cubes on density_act - threshold -> (vertices in TripoSR's frame, faces, sRGB colours)."""
        from skimage.measure import marching_cubes

        from ..mesh import MeshExtractionError

        grid = self.density_grid(scene_code, resolution, progress=progress, cancel=cancel)
        grid = np.nan_to_num(grid, nan=0.0, posinf=np.finfo(np.float32).max / 4)
        if grid.max() <= threshold or grid.min() >= threshold:
            raise MeshExtractionError("the decoded density has no surface at TripoSR's threshold"
                                      if grid.max() <= threshold else "the decoded density fills the whole volume")
        r = self.renderer.radius
        step = 2 * r / (resolution - 1)
        verts, faces, _, _ = marching_cubes(grid, threshold, spacing=(step, step, step))
        verts = (verts - r).astype(np.float32)
        colors = np.concatenate([self.query(scene_code, verts[s:s + 65536])[1].float().cpu().numpy()
                                 for s in range(0, len(verts), 65536)]) if len(verts) else np.zeros((0, 3), np.float32)
        return verts, faces.astype(np.int64), np.clip(colors, 0.0, 1.0)


def _foreground_on_grey(image) -> np.ndarray:
    """PIL image -> (H, W, 3) float32 on TripoSR's grey background (see TripoSR.preprocess)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), np.float32) / 255.0
        alpha = rgba[..., 3]
        ys, xs = np.nonzero(alpha > 0)
        if len(ys) and alpha.min() < 1.0:
            fg = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            size = max(fg.shape[:2])
            canvas_size = max(int(size / FOREGROUND_RATIO), 1)
            canvas = np.zeros((canvas_size, canvas_size, 4), np.float32)
            y0, x0 = (canvas_size - fg.shape[0]) // 2, (canvas_size - fg.shape[1]) // 2
            canvas[y0:y0 + fg.shape[0], x0:x0 + fg.shape[1]] = fg
            rgba = canvas
        rgb, a = rgba[..., :3], rgba[..., 3:4]
        return (rgb * a + BACKGROUND_GREY * (1 - a)).astype(np.float32)
    return np.asarray(image.convert("RGB"), np.float32) / 255.0
