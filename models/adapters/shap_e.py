"""Shap-E through diffusers: `ShapEPipeline` (text) and `ShapEImg2ImgPipeline` (one front image),
sampled with diffusers' own pipeline (Heun, classifier-free guidance), meshed by its renderer's
`decode_to_mesh` (SDF marching cubes + colour head), converted to a Kiln mesh.

Weights come from a local folder in diffusers' layout (a snapshot of openai/shap-e or
openai/shap-e-img2img); nothing is downloaded. diffusers reads safetensors, or .bin files with
`weights_only=True`.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..mesh import Cancelled
from ..meshio import SourceMesh
from .frames import SHAP_E_TO_KILN, linear_to_srgb, to_kiln
from .mc_tables import fill_mesh_decoder_tables

HUB_REPOS = {"text": "openai/shap-e", "images": "openai/shap-e-img2img"}
DEFAULT_STEPS = 64                                  # what the model card and demo run
DEFAULT_GUIDANCE = {"text": 15.0, "images": 3.0}    # the model cards' values
QUERY_BATCH = 4096                                  # decode_to_mesh's default
IMAGE_BACKGROUND = 1.0                              # Shap-E's image examples are on white

Progress = Callable[[float, str], None] | None
Cancel = Callable[[], bool] | None


class ShapEAdapter:
    def __init__(self, pipe, mode: str, device: torch.device, source: str, filled_tables: bool):
        self.pipe = pipe
        self.mode = mode
        self.device = device
        self.source = source
        self.filled_tables = filled_tables  # True: the checkpoint had no marching-cubes tables

    @classmethod
    def load(cls, path: str, mode: str, device="cpu") -> ShapEAdapter:
        from diffusers import ShapEImg2ImgPipeline, ShapEPipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()      # loading bars would flood the backend's log
        transformers_logging.disable_progress_bar()
        pipe_cls = ShapEPipeline if mode == "text" else ShapEImg2ImgPipeline
        pipe = pipe_cls.from_pretrained(path, local_files_only=True, low_cpu_mem_usage=False)
        pipe.set_progress_bar_config(disable=True)
        pipe = pipe.to(device)
        filled = fill_mesh_decoder_tables(pipe.shap_e_renderer.mesh_decoder)
        return cls(pipe, mode, torch.device(device), path, filled)

    # ------------------------------------------------------------ sampling

    def sample_latent(self, condition, seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float | None = None,
                      progress: Progress = None, cancel: Cancel = None) -> torch.Tensor:
        """Text prompt or PIL image -> Shap-E latent (1, num_embeddings, embedding_dim), through the
        diffusers pipeline (its progress bar is replaced by one that reports and checks for cancel)."""
        guidance = DEFAULT_GUIDANCE[self.mode] if guidance is None else float(guidance)

        def progress_bar(iterable=None, total=None):
            items = list(iterable) if iterable is not None else list(range(total))
            for i, item in enumerate(items):
                if cancel is not None and cancel():
                    raise Cancelled()
                yield item
                if progress is not None:
                    progress((i + 1) / len(items), f"Shap-E prior {i + 1}/{len(items)}")

        self.pipe.progress_bar = progress_bar
        generator = torch.Generator("cpu").manual_seed(int(seed))
        key = "prompt" if self.mode == "text" else "image"
        out = self.pipe(**{key: condition}, num_inference_steps=int(steps), guidance_scale=guidance,
                        generator=generator, output_type="latent")
        return out.images

    # ------------------------------------------------------------ meshing

    @torch.no_grad()
    def decode_mesh(self, latent: torch.Tensor, grid_size: int = 128, progress: Progress = None,
                    cancel: Cancel = None) -> SourceMesh:
        """Shap-E latent -> Kiln SourceMesh (Kiln axes, in the cube, sRGB vertex colours)."""
        renderer = self.pipe.shap_e_renderer
        calls = {"n": 0}
        total = -(-grid_size ** 3 // QUERY_BATCH)

        def hook(module, args, kwargs):
            if cancel is not None and cancel():
                raise Cancelled()
            calls["n"] += 1
            if progress is not None and calls["n"] <= total and calls["n"] % 16 == 0:
                progress(calls["n"] / total, f"Shap-E SDF grid {grid_size}^3")

        handle = renderer.mlp.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            raw = renderer.decode_to_mesh(latent[:1].to(self.device), self.device, grid_size=grid_size,
                                          query_batch_size=QUERY_BATCH)
        finally:
            handle.remove()
        verts = raw.verts.detach().float().cpu().numpy()
        faces = raw.faces.detach().cpu().numpy()
        if raw.vertex_channels:
            linear = torch.stack([raw.vertex_channels[c] for c in ("R", "G", "B")], -1).float().cpu().numpy()
            colors = linear_to_srgb(linear)  # diffusers converts the colour head's sRGB to linear
        else:
            colors = None
        return to_kiln(verts, faces, colors, SHAP_E_TO_KILN)

    def generate(self, condition, seed: int = 0, steps: int = DEFAULT_STEPS, guidance: float | None = None,
                 grid_size: int = 128, progress: Progress = None, cancel: Cancel = None) -> SourceMesh:
        def part(a, b):
            return None if progress is None else (lambda f, m="": progress(a + (b - a) * f, m))

        latent = self.sample_latent(condition, seed, steps, guidance, part(0.0, 0.7), cancel)
        return self.decode_mesh(latent, grid_size, part(0.7, 1.0), cancel)


def prepare_image(img):
    """A PIL image -> RGB on white (Shap-E's conditioning images are objects on white)."""
    from .images import on_background

    return on_background(img, IMAGE_BACKGROUND)

