"""Published-checkpoint adapters (Shap-E through diffusers, TripoSR-format image -> 3D), offline.

Tiny randomly initialised models are built here, saved in the published layouts (a diffusers
pipeline folder; config.yaml + model.ckpt) and loaded through the adapters' real loading code from
$KILN_MODELS_DIR. A few weights are set so the output is a known ellipsoid: the tests check Kiln's
conventions (in the cube, +Z up, front -Y, sRGB colours) on the full path, result files included.
Missing weights must give `model_unavailable` over the real CLI and server.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import trimesh

from backend.protocol import parse_request
from tests.adapter_fixtures import make_image, shape_shap_e_renderer, tiny_shap_e, write_tiny_triposr
from tests.backend_proc import REPO, BackendProcess


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """$KILN_MODELS_DIR with tiny shap-e/, shap-e-img2img/ and TripoSR/ checkpoints."""
    root = tmp_path_factory.mktemp("models")
    for mode, folder in (("text", "shap-e"), ("images", "shap-e-img2img")):
        pipe = tiny_shap_e(mode)
        shape_shap_e_renderer(pipe.shap_e_renderer)
        pipe.save_pretrained(str(root / folder))
    write_tiny_triposr(str(root / "TripoSR"))
    return str(root)


@pytest.fixture()
def offline_env(monkeypatch, tmp_path):
    """No Hugging Face cache to fall back on, no network."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return {"HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "1"}


def _run(models_dir, monkeypatch, tmp_path, fit_steps=2, **fields):
    """One generate job in process, through the backend's own job runner and registry."""
    from backend import adapters
    from backend.jobs import JobContext, run_job
    from backend.registry import Registry
    from backend.results import OutputRoot

    torch.set_num_threads(2)
    monkeypatch.setenv("KILN_MODELS_DIR", models_dir)
    monkeypatch.setattr(adapters, "FIT_STEPS", fit_steps)  # the fit itself is tested elsewhere; keep this fast
    req = parse_request(json.dumps({"op": "generate", "id": "j", "resolution": 64, "out": "job", **fields}))
    events = []
    ctx = JobContext("j", Registry("cpu"), OutputRoot(str(tmp_path)), emit=lambda t, f: events.append((t, f)))
    return run_job(ctx, req), events


def _check_kiln_result(result, events):
    """The result follows Kiln's conventions; returns the mesh's vertices (Kiln frame) and colours."""
    from backend.results import load_latent
    from models.meshio import load_mesh, y_up_to_z_up

    glb = load_mesh(result["glb"])                          # Kiln's reader: COLOR_0 back to sRGB
    assert glb.up == "y"
    v = y_up_to_z_up(glb.vertices)                          # GLB (+Y up) -> Kiln (+Z up)
    assert len(v) == result["mesh"]["vertices"] > 100
    assert np.abs(v).max() <= 1.0 and v[:, 2].min() == pytest.approx(-0.85, abs=1e-3)   # standing in the cube
    assert np.abs(v[:, :2].min(0) + v[:, :2].max(0)).max() < 1e-3                      # centred on Z
    latent, meta = load_latent(result["latent"])
    assert latent.shape[1] == 3 and np.isfinite(latent.numpy()).all()
    assert meta["latent"] == "fitted to the model's mesh" and result["fit_iou"] is not None
    assert os.path.exists(result["preview"])
    assert [f["stage"] for t, f in events if t == "progress"][-1] == "fit"
    assert all(0 <= f["fraction"] <= 1 for t, f in events if t == "progress")
    return v, meta, glb


def test_shap_e_text_full_path(models_dir, offline_env, monkeypatch, tmp_path):
    result, events = _run(models_dir, monkeypatch, tmp_path, prompt="a red chair", model="shap-e", steps=2, seed=1)
    v, meta, glb = _check_kiln_result(result, events)
    ext = v.max(0) - v.min(0)
    # the ellipsoid is tall along Shap-E's +Z (half-axes 0.42, 0.42, 0.85): Kiln's +Z, largest side 1.45
    assert ext[2] == pytest.approx(1.45, abs=0.01) and ext[0] == pytest.approx(ext[1], rel=0.02)
    assert 0.4 < ext[0] / ext[2] < 0.6                                   # 0.42 / 0.85
    assert meta["model"] == "shap-e" and meta["steps"] == 2 and meta["guidance"] == 15.0
    assert meta["weights"] == os.path.join(models_dir, "shap-e")
    mesh = trimesh.Trimesh(v, glb.faces)
    assert mesh.is_watertight and mesh.volume > 0                      # closed, faces wound outward
    col = glb.colors
    assert col[:, 0].mean() > 0.8 and col[:, 1:].mean() < 0.2          # red (colour head sigmoid(3, -3, -3))
    assert any(t == "progress" and "Shap-E prior" in f["message"] for t, f in events)


def test_shap_e_image_full_path(models_dir, offline_env, monkeypatch, tmp_path):
    front = make_image(str(tmp_path / "front.png"))
    result, _ = _run(models_dir, monkeypatch, tmp_path, fit_steps=0, mode="images", front=front,
                     model="shap-e-img2img", steps=2, preview=False)
    assert result["mesh"]["faces"] > 100 and result["warnings"] == [] and result["fit_iou"] is None
    v = np.asarray(result["mesh"]["bounds"])
    assert v[1, 2] - v[0, 2] == pytest.approx(1.45, abs=0.01)           # tall along +Z, standing in the cube


def test_triposr_full_path_axes_and_front(models_dir, offline_env, monkeypatch, tmp_path):
    front = make_image(str(tmp_path / "front.png"))
    result, events = _run(models_dir, monkeypatch, tmp_path, mode="images", front=front, back=front, model="triposr")
    v, meta, glb = _check_kiln_result(result, events)
    ext = v.max(0) - v.min(0)
    # TripoSR half-axes: 0.45 toward the camera (+x), 0.6 image right (+y), 0.9 up (+z)
    # -> Kiln: X (image right) 0.6, Y (depth) 0.45, Z (up) 0.9
    assert ext[2] > ext[0] > ext[1]
    # the top leans toward TripoSR's camera (+x), i.e. toward Kiln's front (-Y)
    top, bottom = v[v[:, 2] > np.quantile(v[:, 2], 0.8)], v[v[:, 2] < np.quantile(v[:, 2], 0.2)]
    assert top[:, 1].mean() < bottom[:, 1].mean() - 0.05
    assert result["warnings"] and "front image only" in result["warnings"][0]
    assert meta["model"] == "triposr" and meta["threshold"] == 25.0
    col = glb.colors
    assert col[:, 0].mean() > 0.8 and col[:, 1].mean() < 0.2 and col[:, 2].mean() > 0.8   # sigmoid(2, -2, 2)


def test_frames_are_rotations_into_kiln():
    from models.adapters.frames import SHAP_E_TO_KILN, TRIPOSR_TO_KILN

    for rot in (SHAP_E_TO_KILN, TRIPOSR_TO_KILN):
        assert np.allclose(rot @ rot.T, np.eye(3)) and np.linalg.det(rot) == pytest.approx(1.0)
        assert np.allclose(rot @ [0, 0, 1], [0, 0, 1])                   # up stays +Z
    assert np.allclose(SHAP_E_TO_KILN @ [0, 1, 0], [0, -1, 0])           # Shap-E's front (+Y) -> Kiln's front (-Y)
    assert np.allclose(TRIPOSR_TO_KILN @ [1, 0, 0], [0, -1, 0])          # toward TripoSR's camera -> Kiln's front
    assert np.allclose(TRIPOSR_TO_KILN @ [0, 1, 0], [1, 0, 0])           # image right -> +X


def test_marching_cubes_tables_fill_an_empty_shap_e_decoder():
    from diffusers.pipelines.shap_e.renderer import MeshDecoder

    from models.adapters.mc_tables import fill_mesh_decoder_tables

    dec = MeshDecoder()
    assert fill_mesh_decoder_tables(dec) and not fill_mesh_decoder_tables(dec)   # only fills empty tables
    g = torch.linspace(-1, 1, 40)
    x, y, z = torch.meshgrid(g, g, g, indexing="ij")
    out = dec(0.6 - torch.sqrt((x / 1.2) ** 2 + y ** 2 + z ** 2), torch.tensor([-1.0] * 3), torch.tensor([2.0] * 3))
    mesh = trimesh.Trimesh(out.verts.numpy(), out.faces.numpy())
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.6 ** 3 * 1.2, rel=0.02)   # positive: wound outward


def test_triposr_config_and_checkpoint_names(tmp_path):
    from models.triposr.loading import TripoSRLoadError, build_model, load_config, load_triposr

    folder = write_tiny_triposr(str(tmp_path / "tsr"), shaped=False)
    cfg = load_config(os.path.join(folder, "config.yaml"))
    assert cfg["backbone"]["in_channels"] == 16                      # ${tokenizer.num_channels} resolved
    keys = set(load_triposr(folder).state_dict())
    # TripoSR's checkpoint key names (tsr/system.py module tree)
    for k in ("image_tokenizer.model.embeddings.patch_embeddings.projection.weight",
              "image_tokenizer.model.encoder.layer.0.attention.attention.query.weight",
              "image_tokenizer.model.pooler.dense.weight", "tokenizer.embeddings", "backbone.norm.weight",
              "backbone.proj_in.weight", "backbone.transformer_blocks.0.attn1.to_q.weight",
              "backbone.transformer_blocks.0.attn2.to_k.weight", "backbone.transformer_blocks.0.attn1.to_out.0.bias",
              "backbone.transformer_blocks.0.ff.net.0.proj.weight", "backbone.transformer_blocks.0.ff.net.2.weight",
              "backbone.transformer_blocks.0.norm3.weight", "backbone.proj_out.weight",
              "post_processor.upsample.weight",
              "decoder.layers.0.weight", "decoder.layers.4.bias"):
        assert k in keys, k
    assert not any(k.startswith("renderer.") or "image_mean" in k for k in keys)
    # a checkpoint that does not match the config, or that is not plain tensors, is refused clearly
    state = torch.load(os.path.join(folder, "model.ckpt"), weights_only=True)
    state.pop("tokenizer.embeddings")
    torch.save(state, os.path.join(folder, "model.ckpt"))
    with pytest.raises(TripoSRLoadError, match="1 missing.*tokenizer.embeddings"):
        load_triposr(folder)
    torch.save({"x": torch.zeros(1), "obj": _NotATensor()}, os.path.join(folder, "model.ckpt"))
    with pytest.raises(TripoSRLoadError, match="not a weights-only checkpoint"):
        load_triposr(folder)
    cfg["decoder_cls"] = "os.system"
    with pytest.raises(TripoSRLoadError, match="decoder_cls"):
        build_model(cfg, folder)


class _NotATensor:
    pass


def test_missing_weights_are_model_unavailable_on_the_cli(tmp_path, offline_env):
    env = {**os.environ, **offline_env, "PYTHONPATH": REPO, "KILN_THREADS": "1"}
    env.pop("KILN_MODELS_DIR", None)
    out = subprocess.run([sys.executable, "-m", "backend", "generate", "--prompt", "a red chair", "--model", "shap-e",
                          "--models-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "o")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error [model_unavailable]: shap-e: weights not found in ")
    assert str(tmp_path / "empty" / "shap-e") in line and "Hugging Face cache (openai/shap-e)" in line


def test_missing_weights_over_the_server(tmp_path, offline_env):
    env = {**offline_env, "KILN_MODELS_DIR": str(tmp_path / "empty")}
    proc = BackendProcess(str(tmp_path / "out"), env=env)
    try:
        proc.send("hello", "h1")
        models = {m["id"]: m for m in proc.wait_for("h1", timeout=60)["models"]}
        for mid in ("shap-e", "shap-e-img2img", "triposr"):
            assert not models[mid]["available"] and models[mid]["reason"].startswith("weights not found in ")
            assert models[mid]["device_needs"]
        front = make_image(str(tmp_path / "front.png"))
        proc.send("generate", "g1", mode="images", front=front, model="triposr")
        ev = proc.wait_for("g1")
        assert ev["event"] == "error" and ev["code"] == "model_unavailable" and "TripoSR" in ev["message"]
        proc.send("generate", "g2", prompt="a red chair", model="shap-e")   # a text job is not batched with Kiln's
        assert proc.wait_for("g2")["code"] == "model_unavailable"
        proc.send("generate", "g3", prompt="a red chair", model="triposr")  # wrong mode for the model
        assert proc.wait_for("g3")["code"] == "model_unavailable"
        proc.send("hello", "h2")                                            # still serving
        assert proc.wait_for("h2")["event"] == "result"
    finally:
        proc.close()
