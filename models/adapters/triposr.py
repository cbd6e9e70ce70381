"""TripoSR-format image -> 3D (models.triposr) as a Kiln adapter: one front image -> Kiln mesh."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..meshio import SourceMesh
from ..triposr import load_triposr
from ..triposr.system import DEFAULT_THRESHOLD
from .frames import TRIPOSR_TO_KILN, to_kiln

HUB_REPO = "stabilityai/TripoSR"


class TripoSRAdapter:
    def __init__(self, model, source: str):
        self.model = model
        self.source = source

    @classmethod
    def load(cls, path: str, device="cpu") -> TripoSRAdapter:
        return cls(load_triposr(path, device), path)

    def generate(self, image, resolution: int = 128, threshold: float = DEFAULT_THRESHOLD,
                 progress: Callable[[float, str], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> SourceMesh:
        """A PIL image (object on grey, or RGBA with transparency) -> Kiln SourceMesh."""
        if progress:
            progress(0.0, "TripoSR: image -> triplane")
        with torch.inference_mode():
            codes = self.model(self.model.preprocess(image), cancel=cancel)
        sub = None if progress is None else (lambda f, m="": progress(0.3 + 0.65 * f, m))
        verts, faces, colors = self.model.extract_mesh(codes[0], resolution, threshold, progress=sub, cancel=cancel)
        return to_kiln(verts, faces, colors, TRIPOSR_TO_KILN)
