"""Warm text -> coloured mesh latency at 128^3, split into text encoding, sampling, decode,
marching cubes and the floater clean-up the backend applies; cold load time; batched sampling vs
one at a time; the backend's default of up to 4 candidates (the first in one piece kept) against
one sample, for a prompt whose first sample is whole and for one whose samples are all in
pieces (the worst case: every candidate drawn and looked at); the rebuild of a sample left in
pieces (models/text/rebuild.py: two renders and the image reconstructor) and the backend's whole
default (four candidates, then the rebuild) to a 128^3 mesh; peak memory.

    .venv/bin/python bench/text.py [--device auto]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import report, timeit  # noqa: E402
from models.device import pick_device  # noqa: E402
from models.mesh import FLOATER_MIN_PART, extract_mesh, remove_small_parts, sdf_grid  # noqa: E402
from models.text.candidates import CandidateConfig, generate_whole  # noqa: E402
from models.text.flow import initial_noise, sample  # noqa: E402
from models.images.pipeline import ImagesToAsset  # noqa: E402
from models.text.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, TextToAsset  # noqa: E402
from models.text.rebuild import rebuild_whole, rebuilder  # noqa: E402
from models.triplane.inference import LatentField, latent_to_mesh  # noqa: E402
from models.triplane.loading import load_autoencoder  # noqa: E402

PROMPT = "a red chair with a tall back"
WHOLE_PROMPT = "a green tree"     # seed 0's sample is in one piece: one candidate is looked at
BROKEN_PROMPT = "a wooden table"  # every sample's legs apart: all four are drawn and looked at


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    device = pick_device(args.device)
    t = time.perf_counter()
    ae = load_autoencoder(device=device)
    gen = TextToAsset.load(device=device)
    out = {"device": str(device), "threads": torch.get_num_threads(), "cold_load_s": round(time.perf_counter() - t, 3)}
    m = gen.model
    enc = gen.encoder.encode([PROMPT])
    cond = m.condition(enc.pooled, enc.tokens, enc.mask)
    uncond = m.dit.null_condition(1, enc.tokens.shape[1])
    shape = (1, 3, m.dit.cfg.latent_channels, m.dit.cfg.latent_res, m.dit.cfg.latent_res)
    out["text_encode"] = timeit(lambda: gen.encoder.encode([PROMPT]))
    noise = initial_noise(shape, 0, device)
    out["sample_8_steps_cfg"] = timeit(lambda: sample(m.dit, cond, uncond, noise, DEFAULT_STEPS, DEFAULT_GUIDANCE))
    latent, _ = gen.generate_latent(PROMPT, seed=0)
    out["decode_triplane"] = timeit(lambda: LatentField(ae, latent))
    field = LatentField(ae, latent)
    out["marching_cubes_128_incl_queries"] = timeit(lambda: extract_mesh(field.sdf, field.rgb, 128))
    grid = sdf_grid(field.sdf, 128)
    out["floater_cleanup_128"] = timeit(lambda: remove_small_parts(grid, FLOATER_MIN_PART))
    out["end_to_end_128"] = timeit(lambda: latent_to_mesh(ae, gen.generate_latent(PROMPT, seed=1)[0], 128,
                                                          min_part=FLOATER_MIN_PART))
    # batching: 8 prompts sampled together vs one after another
    prompts = [PROMPT] * 8
    one = timeit(lambda: [gen.generate_latents([q], [i]) for i, q in enumerate(prompts)], 2)
    many = timeit(lambda: gen.generate_latents(prompts, list(range(8))), 2)
    out["sample_8_prompts_sequential_s"] = one["median_s"]
    out["sample_8_prompts_batched_s"] = many["median_s"]
    out["batching_speedup"] = round(one["median_s"] / many["median_s"], 2)
    # candidates: the backend's default against the seed's own sample, same process
    for name, prompt in (("whole", WHOLE_PROMPT), ("in_pieces", BROKEN_PROMPT)):
        plain = timeit(lambda: generate_whole(gen, ae, [prompt], [0], CandidateConfig(candidates=1)), 3)
        four = timeit(lambda: generate_whole(gen, ae, [prompt], [0], CandidateConfig()), 3)
        tried = generate_whole(gen, ae, [prompt], [0], CandidateConfig()).tried[0]
        out[f"candidates_{name}"] = {"prompt": prompt, "tried": tried, "one_sample_s": plain["median_s"],
                                     "four_candidates_s": four["median_s"],
                                     "ratio": round(four["median_s"] / plain["median_s"], 2)}
    # the rebuild: alone, after one sample, and the backend's default end to end
    images = ImagesToAsset.load(ae, device=device)
    rebuild = rebuilder(images, ae, FLOATER_MIN_PART)
    broken = generate_whole(gen, ae, [BROKEN_PROMPT], [0], CandidateConfig()).latents
    out["rebuild_alone"] = timeit(lambda: rebuild_whole(images, ae, broken, FLOATER_MIN_PART), 3)
    plain = timeit(lambda: generate_whole(gen, ae, [BROKEN_PROMPT], [0], CandidateConfig(candidates=1)), 3)
    rebuilt = timeit(lambda: generate_whole(gen, ae, [BROKEN_PROMPT], [0], CandidateConfig(), rebuild=rebuild), 3)
    out["candidates_in_pieces"]["four_candidates_and_rebuild_s"] = rebuilt["median_s"]
    out["candidates_in_pieces"]["ratio_with_rebuild"] = round(rebuilt["median_s"] / plain["median_s"], 2)

    def backend_default():  # as backend/jobs.py: the mesh refined from the one-piece check's grid
        chosen = generate_whole(gen, ae, [PROMPT], [0], CandidateConfig(), rebuild=rebuild)
        return latent_to_mesh(ae, chosen.latents, 128, min_part=FLOATER_MIN_PART, start=chosen.grids[0])

    out["backend_default_end_to_end_128"] = timeit(backend_default, 3)
    grid = sdf_grid(field.sdf, 64)  # what the one-piece check leaves
    afresh = timeit(lambda: latent_to_mesh(ae, latent, 128, min_part=FLOATER_MIN_PART), 5)
    reused = timeit(lambda: latent_to_mesh(ae, latent, 128, min_part=FLOATER_MIN_PART, start=grid), 5)
    out["mesh_128_from_the_checks_grid"] = {"afresh_s": afresh["median_s"], "from_64_grid_s": reused["median_s"],
                                            "ratio": round(reused["median_s"] / afresh["median_s"], 2)}
    report(out, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
