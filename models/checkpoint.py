"""Weights in and out: safetensors with the config as JSON metadata."""
from __future__ import annotations

import json
import os

import torch
from safetensors.torch import load_file, save_file

WEIGHTS_DIR = os.path.join(os.path.dirname(__file__), "weights")


HALF_MIN_ELEMENTS = 4096  # with half=True, tensors this large are stored as float16


def save_model(model: torch.nn.Module, path: str, config: dict, half: bool = False, **meta) -> None:
    """half=True stores the large tensors (weight matrices, embedding banks) as float16, halving
    the file; they are read back as float32 (relative change of a weight ~5e-4)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tensors = {k: _storage(v.detach(), half) for k, v in model.state_dict().items()}
    metadata = {"config": json.dumps(config), **{k: json.dumps(v) for k, v in meta.items()}}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.chmod(tmp, 0o644)  # safetensors writes 0600; shipped weights are read by other users
    os.replace(tmp, path)


def _storage(t: torch.Tensor, half: bool) -> torch.Tensor:
    dtype = torch.float16 if half and t.is_floating_point() and t.numel() >= HALF_MIN_ELEMENTS else torch.float32
    return t.to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()


def read_metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return {k: json.loads(v) for k, v in (f.metadata() or {}).items()}


def load_state(path: str, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Tensors as float32 (however they are stored) on device, and the metadata."""
    state = {k: v.float() if v.dtype == torch.float16 else v for k, v in load_file(path, device=str(device)).items()}
    return state, read_metadata(path)


def load_module(path: str, build, device: str | torch.device = "cpu", missing: str = ""):
    """A network saved whole (`save_model`): build(config dict) -> module, its weights loaded, on
    device in eval mode. `missing` is the message of the FileNotFoundError when there is no file."""
    if not os.path.exists(path):
        raise FileNotFoundError(missing or f"weights not found: {path}")
    state, meta = load_state(path, device)
    model = build(meta["config"])
    model.load_state_dict(state)
    return model.to(device).eval()


def load_network(path: str, build, prefix: str, device: str | torch.device = "cpu", train_hint: str = ""):
    """A network saved as `<prefix>.*` keys of a weights bundle (models/train/flow_loop.py:
    weights_bundle): build(config dict) -> module. Returns (module on device in eval mode,
    the whole state dict for the bundle's other tensors, metadata)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights not found: {path}" + (f" ({train_hint})" if train_hint else ""))
    state, meta = load_state(path, device)
    net = build(meta["config"])
    net.load_state_dict({k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")})
    return net.to(device).eval(), state, meta
