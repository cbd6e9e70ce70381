"""A TripoSR-architecture image -> 3D model, written for Kiln so that a published TripoSR
`config.yaml` + `model.ckpt` (or `model.safetensors`) loads without the TripoSR package:
DINO ViT image tokenizer -> learnable triplane tokens -> 1D transformer backbone cross-attending
to the image tokens -> 2x transposed-conv upsampler -> NeRF MLP on concatenated triplane features;
the mesh is the density isosurface (marching cubes). Parameter names match TripoSR's checkpoint.

    model = load_triposr("/path/to/TripoSR")            # folder with config.yaml + model.ckpt
    codes = model(model.preprocess(pil_image))           # (1, 3, C, 2P, 2P) scene codes
    v, f, rgb = model.extract_mesh(codes[0], resolution=128)   # TripoSR's own frame
"""
from .loading import TripoSRLoadError, find_checkpoint, load_triposr
from .system import TripoSR

__all__ = ["TripoSR", "TripoSRLoadError", "find_checkpoint", "load_triposr"]
