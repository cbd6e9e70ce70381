"""Train the image reconstructor: front (and back) renders of procedural assets -> their latent.

    python -m models.train images --seed 0

Targets are the autoencoder's latents of the same assets the text model uses (posterior
mean of each asset's coloured surface cloud), moved into the image frame (standing on the
ground, centred, largest side fixed: what a cropped image can tell; models/images/frame.py)
and normalised per (plane, channel). Half of each
batch sees the front view only (its back tokens masked), so one model serves both modes.

Two stages: latent MSE (--steps), then --decoded-steps more with a loss on the *decoded*
field as well: the predicted latent goes through the frozen autoencoder decoder and is
compared with the asset's exact SDF and colour at query points, the autoencoder's own
training loss. Latent MSE weighs every latent number alike, so a thin leg, a few texels,
counts for little; the decoded loss weighs the shape. --init skips the first stage by
starting from its weights. Writes models/weights/images.safetensors (EMA weights and the
latent normalisation).
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from ..checkpoint import save_model
from ..data import load_or_build
from ..images.data import load_or_render
from ..images.frame import records_in_image_frame
from ..images.model import ReconstructorConfig, TriplaneReconstructor
from ..images.pipeline import DEFAULT_WEIGHTS, ImageModel
from ..triplane.loading import load_autoencoder
from .decoded import DecodedField
from .flow_loop import add_runtime_arguments, optimise, training_device, two_stage_run, weights_bundle
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
    p.add_argument("--decoded-steps", type=int, default=3000, help="second-stage steps with the decoded-field loss")
    p.add_argument("--decoded-weight", type=float, default=1.0,
                   help="weight of the decoded-field loss (SDF L1 in asset units + colour MSE), times 10")
    p.add_argument("--decoded-batch", type=int, default=8, help="samples of each batch decoded for that loss")
    p.add_argument("--decoded-points", type=int, default=2048, help="query points per decoded sample")
    p.add_argument("--decoded-lr", type=float, default=2e-4)
    p.add_argument("--init", default="", help="weights of the first stage: start the second from them")
    p.add_argument("--frame", choices=("image", "asset"), default="image",
                   help="targets in the image frame (size and place a cropped image can tell; "
                        "models/images/frame.py) or as the assets sit in the cube (checkpoints before 1.2)")
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
    data = load_or_build("train", args.assets, args.cache, args.workers)
    if args.frame == "image":
        data = records_in_image_frame(data)
    target, mean, std = normalised_asset_latents(ae, args.assets, args.cache, data=data)
    images = torch.from_numpy(images).to(device)
    print(f"encoded {len(target)} assets in {time.time() - t0:.0f}s on {device}", flush=True)

    cfg = ReconstructorConfig(latent_channels=ae.cfg.latent_channels, latent_res=ae.cfg.latent_res)
    field = DecodedField(ae, data, mean, std, args.decoded_points)

    def make_step_with(decoded_weight):
        def make_step(net, opt, sched, rng, _gen):
            def step():
                idx = torch.from_numpy(rng.integers(0, args.assets, args.batch))
                vf = torch.from_numpy(rng.integers(0, args.variants, args.batch))
                vb = torch.from_numpy(rng.integers(0, args.variants, args.batch))
                front = images[idx, 0, vf].float()
                back = images[idx, 1, vb].float()
                has_back = torch.from_numpy(rng.random(args.batch) < args.back_rate).to(device)
                pred = net(front, back, has_back)
                loss = ((pred - target[idx]) ** 2).mean()
                if decoded_weight > 0:
                    k = args.decoded_batch
                    loss = loss + decoded_weight * field.loss(pred[:k], idx[:k].numpy(), rng)
                optimise(net, opt, sched, loss)
                return loss
            return step
        return make_step

    def saver(stage_args, first_stage):
        def save(ema, step, elapsed):
            save_model(weights_bundle(ema, "net", latent_mean=mean, latent_std=std), stage_args.out, cfg.to_dict(),
                       half=True, seed=args.seed, steps=first_stage or step,
                       schedule_steps=max(args.schedule_steps, args.steps), batch=args.batch, assets=args.assets,
                       variants=args.variants, back_rate=args.back_rate,
                       decoded_steps=step if first_stage else 0, decoded_weight=args.decoded_weight,
                       decoded_batch=args.decoded_batch, decoded_points=args.decoded_points,
                       decoded_lr=args.decoded_lr, frame=args.frame, train_seconds=round(elapsed), device=device.type,
                       version="1.3")
        return save

    def load_weights(path):
        first = ImageModel.load(path, device)
        return first.net, first.meta

    two_stage_run(args, device, lambda: TriplaneReconstructor(cfg).to(device), load_weights,
                  lambda stage: make_step_with(10.0 * args.decoded_weight if stage == 2 else 0.0), saver,
                  args.decoded_steps, args.decoded_lr, warmup=(200, 100), save_every=(500, 250))
    return 0
