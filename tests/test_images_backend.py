"""Images -> 3D through the backend: the server, the job runner, the CLI and batch.

Input handling (missing, empty, tiny, corrupt, truncated, huge, blank images; greyscale,
palette, 16-bit, RGBA) needs no weights: the runner reads and checks the images before it
loads the model. Tests that run the model skip while models/weights/images.safetensors is
missing (it is trained with `python -m models.train images`).
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image, ImageDraw

from backend.errors import JobError
from backend.jobs import JobContext, run_job
from backend.protocol import ProtocolError, parse_request, read_kmesh
from backend.registry import Registry
from backend.results import OutputRoot, load_latent
from models.adapters.images import MAX_SIDE, ImageInputError, image_array, load_image
from models.images.pipeline import DEFAULT_WEIGHTS
from tests.backend_proc import REPO, BackendProcess

needs_weights = pytest.mark.skipif(not os.path.exists(DEFAULT_WEIGHTS), reason=(
    f"{os.path.relpath(DEFAULT_WEIGHTS, REPO)} is not shipped yet (python -m models.train images)"))
ENV = {"KILN_THREADS": "1", "OMP_NUM_THREADS": "1"}
JOB_TIMEOUT = 600.0  # a 2-core machine shared with training runs


# ---------------------------------------------------------------- input images


def render_view(path: str, view: str, index: int = 4) -> str:
    """A held-out procedural asset (a teal mug) seen from the front or the back, on white."""
    from models.images.render import canonical_camera, sphere_trace
    from models.world.asset import Asset, sample_asset_spec

    cam = canonical_camera(view)
    _, forward, right, up = cam.basis()
    light = -forward + 0.3 * right + 0.6 * up
    img, mask = sphere_trace(Asset(sample_asset_spec("test", index)).query, cam, 128,
                             (light / np.linalg.norm(light)).astype(np.float32), np.ones(3, np.float32))
    assert mask.mean() > 0.05
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    return path


def draw_shape(path: str, box=(60, 40, 196, 220), size=(256, 256)) -> str:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).ellipse(box, fill=(200, 40, 30))
    img.save(path)
    return path


def png_claiming_size(path: str, width: int, height: int) -> str:
    """A small valid PNG whose IHDR then claims width x height (CRC fixed), as a hostile header."""
    Image.new("RGB", (16, 16), "red").save(path)
    data = bytearray(open(path, "rb").read())
    ihdr = 8 + 8  # signature, then the chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc_end = ihdr + 13
    data[crc_end:crc_end + 4] = struct.pack(">I", zlib.crc32(bytes(data[12:crc_end])) & 0xFFFFFFFF)
    open(path, "wb").write(bytes(data))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    paths = {"front": render_view(str(d / "mug_front.png"), "front"),
             "back": render_view(str(d / "mug_back.png"), "back"),
             "white": str(d / "white.png"), "empty": str(d / "empty.png"), "tiny": str(d / "tiny.png"),
             "text": str(d / "notes.png"), "truncated": str(d / "truncated.png"),
             # over Pillow's decompression-bomb limit, and over Kiln's 64 megapixels only
             "huge": png_claiming_size(str(d / "huge.png"), 20000, 20000),
             "big": png_claiming_size(str(d / "big.png"), 8500, 8500)}
    Image.new("RGB", (256, 256), "white").save(paths["white"])
    open(paths["empty"], "wb").close()
    Image.new("RGB", (1, 1), "red").save(paths["tiny"])
    open(paths["text"], "w").write("not an image\n" * 20)
    whole = open(paths["front"], "rb").read()
    open(paths["truncated"], "wb").write(whole[:len(whole) // 2])
    front = Image.open(paths["front"])
    paths["grey"] = str(d / "mug_grey.png")
    front.convert("L").save(paths["grey"])
    paths["rgba"] = str(d / "mug_rgba.png")
    rgba = front.convert("RGBA")
    rgba.putalpha(Image.fromarray(((np.asarray(front).min(-1) < 250) * 255).astype(np.uint8)))
    rgba.save(paths["rgba"])
    return paths


# ---------------------------------------------------------------- reading images (no weights)


def test_image_array_modes():
    rgb = Image.new("RGB", (16, 16), (255, 128, 0))
    assert np.allclose(image_array(rgb)[0, 0], [1.0, 128 / 255, 0.0]) and image_array(rgb).dtype == np.float32
    grey = image_array(Image.new("L", (16, 16), 51))
    assert grey.shape == (16, 16, 3) and np.allclose(grey, 0.2)
    la = image_array(Image.new("LA", (16, 16), (51, 0)))
    assert la.shape == (16, 16, 4) and np.allclose(la[..., 3], 0.0)
    rgba = image_array(Image.new("RGBA", (16, 16), (0, 0, 255, 128)))
    assert rgba.shape == (16, 16, 4) and np.isclose(rgba[0, 0, 3], 128 / 255)
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert np.allclose(image_array(pal)[0, 0], [0, 1, 0, 0])  # palette entry 1 is green and transparent
    wide = Image.fromarray(np.full((16, 16), 65535, np.uint16))
    assert wide.mode.startswith("I") and np.allclose(image_array(wide), 1.0)
    cmyk = image_array(Image.new("CMYK", (16, 16), (0, 255, 255, 0)))  # no cyan or black: red
    assert cmyk.shape == (16, 16, 3) and np.allclose(cmyk[0, 0], [1, 0, 0])
    for arr in (grey, la, rgba, cmyk):
        assert arr.min() >= 0.0 and arr.max() <= 1.0


def test_load_image_shrinks_large_images_and_keeps_their_shape(tmp_path):
    path = str(tmp_path / "big.png")
    Image.new("RGB", (3000, 1500), (10, 200, 30)).save(path)
    img = load_image(path)
    assert img.size == (MAX_SIDE, MAX_SIDE // 2)
    wide = str(tmp_path / "wide16.png")  # 16-bit greyscale is shrunk too
    Image.fromarray(np.full((1200, 2400), 40000, np.uint16)).save(wide)
    assert load_image(wide).size == (MAX_SIDE, MAX_SIDE // 2)
    assert np.allclose(image_array(load_image(wide)), 40000 / 65535, atol=1e-3)


def test_load_image_turns_photos_upright(tmp_path):
    path = str(tmp_path / "phone.jpg")
    photo = Image.new("RGB", (40, 20), "red")
    exif = photo.getexif()
    exif[0x0112] = 6  # EXIF orientation: shown turned 90 degrees, as phones store portrait photos
    photo.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("name, code, words", [
    ("missing", "not_found", "not found"), ("empty", "bad_input", "empty"), ("tiny", "bad_input", "too small"),
    ("text", "bad_input", "could not read"), ("truncated", "bad_input", "could not read"),
    ("huge", "bad_input", "too large (400 megapixels"), ("big", "bad_input", "too large (8500x8500, 72 megapixels)"),
])
def test_load_image_refuses_unusable_files(images, name, code, words):
    path = images.get(name, os.path.join(os.path.dirname(images["front"]), "missing.png"))
    with pytest.raises(ImageInputError) as info:
        load_image(path)
    assert info.value.code == code and words in str(info.value)


def test_protocol_refine_steps():
    base = {"op": "generate", "id": "r", "mode": "images", "front": "f.png"}
    assert parse_request(json.dumps({**base, "refine": True}))["refine_steps"] is None
    assert parse_request(json.dumps({**base, "refine": True, "refine_steps": 200}))["refine_steps"] == 200
    for bad in ({"refine": True, "refine_steps": 0}, {"refine": True, "refine_steps": 201},
                {"refine": True, "refine_steps": 2.5}, {"refine_steps": 5}):
        with pytest.raises(ProtocolError) as info:
            parse_request(json.dumps({**base, **bad}))
        assert info.value.code == "bad_request"


def test_mismatched_back_image_gives_a_warning(tmp_path, images):
    import torch

    from backend.jobs import _back_view_warnings
    from models.images.preprocess import prepare_image

    def prepared(path):  # as ImagesToAsset.prepare_views gives them to the warning
        return torch.from_numpy(prepare_image(image_array(load_image(path))))[None]

    front, back = prepared(images["front"]), prepared(images["back"])
    assert _back_view_warnings({"front": front}) == []
    assert _back_view_warnings({"front": front, "back": back}) == []  # the same mug from behind
    wide = prepared(draw_shape(str(tmp_path / "wide.png"), box=(10, 110, 246, 150)))
    tall = prepared(draw_shape(str(tmp_path / "tall.png"), box=(110, 10, 150, 246)))
    warnings = _back_view_warnings({"front": wide, "back": tall})
    assert len(warnings) == 1 and "does not match" in warnings[0]


def test_a_poorly_matched_outline_gives_a_warning_naming_the_view():
    from backend.jobs import _outline_warnings
    from models.images.pipeline import OUTLINE_WARN_IOU

    assert _outline_warnings({"front": 0.8, "back": OUTLINE_WARN_IOU}) == []
    warnings = _outline_warnings({"front": 0.8, "back": 0.12})
    assert len(warnings) == 1 and "back image's outline" in warnings[0] and "0.12" in warnings[0]


def test_missing_weights_are_model_unavailable_after_the_images_are_checked(tmp_path, images):
    registry = Registry("cpu")
    entry = registry.entry_for("images", "kiln-images")
    entry.weights = (str(tmp_path / "no-images.safetensors"),)

    def run(**fields):
        req = parse_request(json.dumps({"op": "generate", "id": "j", "mode": "images", "resolution": 64, **fields}))
        ctx = JobContext("j", registry, OutputRoot(str(tmp_path / "out")), emit=lambda *_: None)
        with pytest.raises(JobError) as info:
            run_job(ctx, req)
        return info.value

    err = run(front=images["front"])
    assert err.code == "model_unavailable" and "no-images.safetensors" in err.message
    assert run(front=images["white"]).code == "bad_input"       # the image is checked first
    assert run(front=images["front"], model="kiln-text").code == "model_unavailable"


def test_text_jobs_go_on_without_the_image_weights_and_say_what_was_not_rebuilt(tmp_path):
    """A text sample left in pieces is rebuilt by the image reconstructor; without its weights
    the job still finishes, with the pieces and a warning naming why they were not rebuilt."""
    registry = Registry("cpu")
    registry.entry_for("images", "kiln-images").weights = (str(tmp_path / "no-images.safetensors"),)
    req = parse_request(json.dumps({"op": "generate", "id": "j", "prompt": "a wooden table", "seed": 0,
                                    "resolution": 64, "candidates": 1, "preview": False}))
    ctx = JobContext("j", registry, OutputRoot(str(tmp_path / "out")), emit=lambda *_: None)
    result = run_job(ctx, req)
    assert not result["rebuilt"] and result["mesh"]["parts"] > 1
    assert any("could not be rebuilt" in w and "no-images.safetensors" in w for w in result["warnings"])
    assert any("separate pieces" in w for w in result["warnings"])


# ---------------------------------------------------------------- over the server


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    proc = BackendProcess(str(root), env=ENV)
    yield proc, str(root)
    proc.close()


def test_hello_reports_the_image_model(backend):
    proc, _ = backend
    proc.send("hello", "h")
    models = {m["id"]: m for m in proc.wait_for("h", timeout=120)["models"]}
    entry = models["kiln-images"]
    assert entry["modes"] == ["images"] and entry["available"] == os.path.exists(DEFAULT_WEIGHTS)
    assert entry["available"] or "images.safetensors" in entry["reason"]


@pytest.mark.parametrize("case, code, words", [
    ("missing", "not_found", "front image: image file not found"),
    ("empty", "bad_input", "empty (0 bytes)"),
    ("tiny", "bad_input", "too small (1x1)"),
    ("text", "bad_input", "could not read notes.png"),
    ("truncated", "bad_input", "could not read truncated.png"),
    ("white", "bad_input", "no object found"),
    ("huge", "bad_input", "too large (400 megapixels"),
    ("big", "bad_input", "too large (8500x8500"),
    ("bad_back", "not_found", "back image: image file not found"),
])
def test_bad_images_are_refused_and_the_backend_keeps_serving(backend, images, case, code, words):
    proc, _ = backend
    missing = os.path.join(os.path.dirname(images["front"]), "missing.png")
    fields = {"front": images["front"], "back": missing} if case == "bad_back" else \
        {"front": images.get(case, missing)}
    proc.send("generate", f"bad-{case}", mode="images", resolution=64, **fields)
    proc.send("hello", f"alive-{case}")
    seen = []
    ev = proc.wait_for(f"bad-{case}", timeout=JOB_TIMEOUT, seen=seen)
    assert ev["event"] == "error" and ev["code"] == code, ev
    assert words in ev["message"] and "Traceback" not in ev["message"]
    # hello is answered at once, so its result may come before the job's error
    alive = next((e for e in seen if e.get("id") == f"alive-{case}" and e["event"] == "result"), None)
    assert (alive or proc.wait_for(f"alive-{case}", timeout=120))["event"] == "result"


def test_bad_refine_requests_are_bad_request(backend, images):
    proc, _ = backend
    proc.send("generate", "rs0", mode="images", front=images["front"], refine=True, refine_steps=0)
    proc.send("generate", "rs1", mode="images", front=images["front"], refine_steps=3)
    for rid in ("rs0", "rs1"):
        ev = proc.wait_for(rid, timeout=120)
        assert ev["event"] == "error" and ev["code"] == "bad_request", ev


def _generate(proc, rid: str, seen: list | None = None, **fields) -> dict:
    proc.send("generate", rid, mode="images", resolution=64, preview=False, **fields)
    ev = proc.wait_for(rid, timeout=JOB_TIMEOUT, seen=seen)
    assert ev["event"] == "result", ev
    return ev


def _assert_mesh_result(ev: dict) -> dict:
    """Every file there, the mesh non-empty and the same in the result, the file and the GLB."""
    for key in ("glb", "mesh_file", "latent"):
        assert os.path.isfile(ev[key]) and os.path.getsize(ev[key]) > 0, key
    arrays = read_kmesh(ev["mesh_file"])
    assert arrays["n_vertices"] == ev["mesh"]["vertices"] > 0 and arrays["n_faces"] == ev["mesh"]["faces"] > 0
    lo, hi = np.array(ev["mesh"]["bounds"])
    assert np.all(lo >= -1.01) and np.all(hi <= 1.01) and np.all(hi > lo)
    _, meta = load_latent(ev["latent"])
    assert meta["op"] == "generate" and meta["mode"] == "images" and meta["model"] == "kiln-images"
    assert meta["model_version"] and meta["resolution"] == 64
    return meta


@needs_weights
def test_front_image_to_mesh(backend, images):
    proc, root = backend
    seen = []
    ev = _generate(proc, "front-only", seen=seen, front=images["front"], seed=5)
    meta = _assert_mesh_result(ev)
    assert meta["front"] == os.path.abspath(images["front"]) and meta["back"] is None and meta["seed"] == 5
    assert meta["refine_steps"] == 0 and meta["refine"] is None and "refine" not in ev
    assert ev["views"] == ["front"] and ev["warnings"] == []
    assert set(ev["outline_iou"]) == {"front"} and ev["outline_iou"] == meta["outline_iou"]
    assert ev["outline_iou"]["front"] > 0.6, ev["outline_iou"]   # a held-out render: the result fits its outline
    stages = [e["stage"] for e in seen if e["event"] == "progress" and e["id"] == "front-only"]
    assert stages[0] == "images" and "reconstruct" in stages and "mesh" in stages and "refine" not in stages
    assert set(ev["timings"]) >= {"read", "load_model", "reconstruct", "mesh", "write", "total"}
    assert os.path.commonpath([ev["dir"], os.path.realpath(root)]) == os.path.realpath(root)


@needs_weights
def test_front_and_back_images(backend, images):
    proc, _ = backend
    ev = _generate(proc, "front-back", front=images["front"], back=images["back"])
    meta = _assert_mesh_result(ev)
    assert ev["views"] == meta["views"] == ["front", "back"] and ev["warnings"] == []
    assert set(ev["outline_iou"]) == {"front", "back"} and min(ev["outline_iou"].values()) > 0.6, ev["outline_iou"]
    assert meta["back"] == os.path.abspath(images["back"])


@needs_weights
def test_refinement_reports_its_figures(backend, images):
    proc, _ = backend
    seen = []
    ev = _generate(proc, "refined", seen=seen, front=images["front"], refine=True, refine_steps=2)
    meta = _assert_mesh_result(ev)
    refine = ev["refine"]
    assert refine["steps"] == meta["refine_steps"] == 2 and refine["seconds"] > 0
    for when in ("before", "after"):
        assert 0.0 <= refine[when]["silhouette_iou"] <= 1.0 and refine[when]["colour_l1"] >= 0.0
    assert meta["refine"] == refine
    assert "refine" in [e["stage"] for e in seen if e["event"] == "progress" and e["id"] == "refined"]


@needs_weights
def test_cancel_during_refinement(backend, images):
    proc, _ = backend
    proc.send("generate", "long-refine", mode="images", front=images["front"], resolution=64, refine=True,
              refine_steps=200)
    ev = proc.wait_for("long-refine", types=("progress", "result", "error"), timeout=JOB_TIMEOUT)
    while ev["event"] == "progress" and ev["stage"] != "refine":
        ev = proc.wait_for("long-refine", types=("progress", "result", "error"), timeout=JOB_TIMEOUT)
    assert ev["event"] == "progress", ev
    proc.send("cancel", "stop-refine", target="long-refine")
    assert proc.wait_for("long-refine", timeout=120)["event"] == "cancelled"
    proc.send("hello", "after-cancel")
    assert proc.wait_for("after-cancel", timeout=120)["event"] == "result"


@needs_weights
def test_greyscale_and_rgba_inputs(backend, images):
    proc, _ = backend
    for name in ("grey", "rgba"):
        _assert_mesh_result(_generate(proc, f"in-{name}", front=images[name]))


@needs_weights
def test_the_image_model_renders_through_the_shared_autoencoder():
    registry = Registry("cpu")
    assert registry.get("images").ae is registry.autoencoder()


# ---------------------------------------------------------------- command line and batch


def _cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENV, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=JOB_TIMEOUT)


def test_cli_refuses_a_blank_image(tmp_path, images):
    out = _cli("generate", "--front", images["white"], "--out", str(tmp_path / "o"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error [bad_input]: front image: no object found")


@needs_weights
def test_cli_generate_with_refinement(tmp_path, images):
    out = _cli("generate", "--front", images["front"], "--back", images["back"], "--refine-steps", "2",
               "--resolution", "64", "--no-preview", "--json", "--out", str(tmp_path / "mug"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["refine"]["steps"] == 2 and result["views"] == ["front", "back"]
    assert os.path.isfile(result["glb"]) and result["mesh"]["vertices"] > 0


def test_batch_runs_an_images_job(tmp_path, images):
    """A relative front path resolves against the jobs file; a blank image fails alone."""
    shutil.copy(images["front"], tmp_path / "front.png")
    shutil.copy(images["white"], tmp_path / "white.png")
    jobs = [{"op": "generate", "id": "mug", "mode": "images", "front": "front.png", "resolution": 64,
             "preview": False},
            {"op": "generate", "id": "blank", "mode": "images", "front": "white.png", "resolution": 64}]
    (tmp_path / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    out = _cli("batch", "jobs.jsonl", "--out", "results", cwd=str(tmp_path))
    with open(tmp_path / "results" / "manifest.jsonl") as fh:
        recs = {r["id"]: r for r in map(json.loads, fh)}
    assert out.returncode == 1, out.stderr  # one job failed
    assert recs["blank"]["status"] == "failed" and recs["blank"]["error"]["code"] == "bad_input"
    if os.path.exists(DEFAULT_WEIGHTS):
        assert recs["mug"]["status"] == "ok", recs["mug"]
        assert os.path.isfile(recs["mug"]["result"]["glb"]) and recs["mug"]["result"]["mesh"]["vertices"] > 0
    else:
        assert recs["mug"]["status"] == "failed" and recs["mug"]["error"]["code"] == "model_unavailable"
