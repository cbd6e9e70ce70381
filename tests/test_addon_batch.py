"""The README's headless batch: `blender -b -P examples/batch_generate.py` with 10 prompts in
one run of Debian's Blender 3.4 (the add-on loaded from the checkout), a real backend, Cycles
previews. Checks the manifest, the .blend (reopened in a second Blender) and the renders."""
import json
import os
import subprocess

import numpy as np
import pytest
from PIL import Image

from tests.addon_env import BLENDER, REPO, blender_env, need

PROMPTS = ["a red chair with a tall back", "a blue car with four wheels", "a green tree", "a yellow mug",
           "a tall white lamp", "a wooden table", "a purple rocket", "an orange mushroom", "a grey sword",
           "a small pink house"]

REOPEN = """
import bpy, json, sys
objs = [o for o in bpy.data.objects if o.get("kiln_latent")]
print("KILN_JSON " + json.dumps([{"name": o.name, "prompt": o["kiln_prompt"], "seed": o["kiln_seed"],
      "faces": len(o.data.polygons), "colours": len(o.data.color_attributes),
      "material": o.data.materials[0].name if o.data.materials else ""} for o in objs]))
"""


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    need(BLENDER, "Debian's blender")
    import sys

    work = tmp_path_factory.mktemp("batch")
    prompts = work / "prompts.txt"
    prompts.write_text("# ten prompts\n" + "\n".join(PROMPTS) + "\n")
    out = work / "out"
    env = blender_env(str(work))
    cmd = [BLENDER, "-b", "--factory-startup", "-noaudio", "-P", os.path.join(REPO, "examples", "batch_generate.py"),
           "--", "--prompts", str(prompts), "--out", str(out), "--seed", "3", "--resolution", "64",
           "--size", "96", "--samples", "4", "--python", sys.executable]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = (proc.stdout + proc.stderr)[-5000:]
    assert (out / "manifest.json").is_file(), tail
    manifest = json.loads((out / "manifest.json").read_text())
    return proc.returncode, manifest, out, env, tail


def test_all_ten_prompts_in_one_run(batch):
    code, manifest, _, _, tail = batch
    assert [r["prompt"] for r in manifest["assets"]] == PROMPTS
    assert manifest["failed"] == 0 and code == 0, [r.get("error") for r in manifest["assets"]] + [tail]
    for r in manifest["assets"]:
        assert r["faces"] > 0 and os.path.isfile(r["latent"]) and os.path.isfile(r["mesh_file"])


def test_previews_show_the_asset(batch):
    _, manifest, _, _, _ = batch
    for r in manifest["assets"]:
        img = np.asarray(Image.open(r["preview"]).convert("RGB")).astype(float)
        assert img.shape == (96, 96, 3)
        background = np.median(img.reshape(-1, 3), axis=0)
        differs = np.abs(img - background).sum(-1) > 30
        assert differs.mean() > 0.005, f"{r['preview']}: the asset is not visible"


def test_blend_keeps_assets(batch):
    _, manifest, out, env, _ = batch
    proc = subprocess.run([BLENDER, "-b", "--factory-startup", "-noaudio", str(out / "batch.blend"),
                           "--python-expr", REOPEN], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("KILN_JSON "))
    objs = {o["name"]: o for o in json.loads(line[len("KILN_JSON "):])}
    assert len(objs) == 10
    for r in manifest["assets"]:
        o = objs[r["object"]]
        assert o["prompt"] == r["prompt"] and o["seed"] == r["seed"] and o["faces"] == r["faces"]
        assert o["colours"] == 1 and o["material"].startswith("Kiln Vertex Colour")
