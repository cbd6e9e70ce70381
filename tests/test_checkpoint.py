"""Weights files: float16 storage of large tensors, read back as float32; the edit model's
locality mask."""
import os

import torch

from models.checkpoint import HALF_MIN_ELEMENTS, load_state, read_metadata, save_model
from models.edit.pipeline import localise


def _bundle() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.big = torch.nn.Parameter(torch.randn(128, 64))           # 8192 elements: stored as float16
    net.register_buffer("small", torch.randn(3, 8) * 1e-3)      # kept float32 (normalisation statistics)
    net.register_buffer("count", torch.tensor([7]))             # integers untouched
    return net


def test_half_storage_halves_large_tensors_and_reads_back_float32(tmp_path):
    net = _bundle()
    assert net.big.numel() >= HALF_MIN_ELEMENTS > net.small.numel()
    full, half = str(tmp_path / "full.safetensors"), str(tmp_path / "half.safetensors")
    save_model(net, full, {"width": 1}, steps=3)
    save_model(net, half, {"width": 1}, half=True, steps=3)
    assert os.path.getsize(half) < 0.6 * os.path.getsize(full)
    state, meta = load_state(half)
    assert state["big"].dtype == torch.float32 and state["small"].dtype == torch.float32
    assert torch.equal(state["small"], net.small)                # exact
    assert torch.equal(state["count"], net.count)
    rel = (state["big"] - net.big.detach()).norm() / net.big.detach().norm()
    assert 0 < rel < 1e-3
    assert meta == read_metadata(full) and meta["steps"] == 3 and meta["config"] == {"width": 1}


def test_localise_keeps_the_edited_region_and_drops_spread_noise():
    delta = torch.randn(1, 3, 8, 16, 16) * 0.05                  # small changes everywhere
    delta[:, 0, :, 2:6, 2:6] += 2.0                              # the edit: one region of one plane
    out = localise(delta, 0.25)
    assert torch.equal(localise(delta, 0.0), delta)
    assert torch.allclose(out[:, 0, :, 3:5, 3:5], delta[:, 0, :, 3:5, 3:5])   # the edit's core is kept whole
    assert out[:, 1:].abs().max() == 0 and out[:, 0, :, 10:, 10:].abs().max() == 0
    # an edit spread over the whole asset (a recolour of everything) passes unchanged
    whole = torch.ones(1, 3, 8, 16, 16) + 0.1 * torch.randn(1, 3, 8, 16, 16)
    assert torch.allclose(localise(whole, 0.25), whole)
