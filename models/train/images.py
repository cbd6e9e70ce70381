"""Train the image reconstructor: front (and back) renders of procedural assets -> their latent.

    python -m models.train images --seed 0

Targets are the autoencoder's latents of the same assets the text model uses (posterior
mean of each asset's coloured surface cloud), normalised per (plane, channel). Half of each
batch sees the front view only (its back tokens masked), so one model serves both modes.
Writes models/weights/images.safetensors (EMA weights and the latent normalisation).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ..checkpoint import save_model
from ..images.data import load_or_render
from ..images.model import ReconstructorConfig, TriplaneReconstructor
from ..images.pipeline import DEFAULT_WEIGHTS
from ..triplane.loading import load_autoencoder
from .flow_loop import add_runtime_arguments, optimise, planned_run, train, training_device, weights_bundle
from .text import normalised_asset_latents

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3300)
    p.add_argument("--schedule-steps", type=int, default=3300,
                   help="cosine schedule length; --steps N below it reproduces step N of the longer run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--assets", type=int, default=4000)
    p.add_argument("--variants", type=int, default=2, help="jittered renders per asset and view")
    p.add_argument("--back-rate", type=float, default=0.5, help="share of samples given the back view too")
    p.add_argument("--ema", type=float, default=0.999)
    add_runtime_arguments(p)
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--run-dir", default=os.path.join(REPO, "runs", "images"))
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def run(args: argparse.Namespace) -> int:
    device = training_device(args)
    torch.manual_seed(args.seed)
    t0 = time.time()
    # the data first: worker processes are forked before CUDA starts
    images = load_or_render("train", args.assets, args.variants, args.cache, args.workers)
    print(f"{images.shape[0]} x {images.shape[1]} views x {images.shape[2]} renders ready in "
          f"{time.time() - t0:.0f}s", flush=True)
    ae = load_autoencoder(device=device)
    target, mean, std = normalised_asset_latents(ae, args.assets, args.cache, args.workers)
    images = torch.from_numpy(images).to(device)
    print(f"encoded {len(target)} assets in {time.time() - t0:.0f}s on {device}", flush=True)

    cfg = ReconstructorConfig(latent_channels=ae.cfg.latent_channels, latent_res=ae.cfg.latent_res)
    model = TriplaneReconstructor(cfg).to(device)

    def make_step(net, opt, sched, rng, _gen):
        def step():
            idx = torch.from_numpy(rng.integers(0, args.assets, args.batch))
            vf = torch.from_numpy(rng.integers(0, args.variants, args.batch))
            vb = torch.from_numpy(rng.integers(0, args.variants, args.batch))
            front = images[idx, 0, vf].float()
            back = images[idx, 1, vb].float()
            has_back = torch.from_numpy(rng.random(args.batch) < args.back_rate).to(device)
            loss = ((net(front, back, has_back) - target[idx]) ** 2).mean()
            optimise(net, opt, sched, loss)
            return loss
        return step

    sched, train_step = planned_run(args, device, model, make_step, warmup=200)

    def save(ema, step, elapsed):
        save_model(weights_bundle(ema, "net", latent_mean=mean, latent_std=std), args.out, cfg.to_dict(),
                   half=True, seed=args.seed, steps=step, schedule_steps=max(args.schedule_steps, args.steps),
                   batch=args.batch, assets=args.assets, variants=args.variants, back_rate=args.back_rate,
                   train_seconds=round(elapsed), device=device.type, version="1.0")

    train(args, model, sched, train_step, 500, save)
    return 0
