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
from .asset_stream import AssetStream, StreamSchedule
from .flow_loop import (add_runtime_arguments, optimise, planned_run, train, training_device, two_stage_run,
                        weights_bundle)
from .text import normalised_asset_latents

# assets queued in a --stream auto run (~0.2 GB of training data each thousand on the device)
STREAM_AUTO_LIMIT = 40000
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
    p.add_argument("--width", type=int, default=192, help="transformer width (model size; version 1.3: 192)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--encoder-depth", type=int, default=3)
    p.add_argument("--decoder-depth", type=int, default=3)
    p.add_argument("--stream", default="0",
                   help="N, or auto: one stage with both losses on N assets made while training (many cores and "
                        "a GPU; models/train/asset_stream.py); auto makes as many as the machine can by the "
                        "ramp's end of a --deadline run and records N. 0: the two cached stages")
    p.add_argument("--stream-warm", type=int, default=512, help="assets made before step 1")
    p.add_argument("--stream-ramp", type=float, default=0.7, help="share of the steps over which all N come in")
    add_runtime_arguments(p)
    p.add_argument("--cache", default=os.path.join(REPO, "runs", "data"))
    p.add_argument("--run-dir", default=os.path.join(REPO, "runs", "images"))
    p.add_argument("--out", default=DEFAULT_WEIGHTS)


def model_config(args, ae) -> ReconstructorConfig:
    return ReconstructorConfig(latent_channels=ae.cfg.latent_channels, latent_res=ae.cfg.latent_res,
                               width=args.width, heads=args.heads, encoder_depth=args.encoder_depth,
                               decoder_depth=args.decoder_depth)


def run(args: argparse.Namespace) -> int:
    if args.stream != "0":
        return run_streamed(args)
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
    if args.init:  # the first stage's own normalisation (a --stream run measures it on its first assets)
        first = ImageModel.load(args.init, device)
        target = (target * std + mean - first.latent_mean) / first.latent_std
        mean, std = first.latent_mean, first.latent_std
    images = torch.from_numpy(images).to(device)
    print(f"encoded {len(target)} assets in {time.time() - t0:.0f}s on {device}", flush=True)

    # the first stage's own size when starting from it (a --stream run is larger than the default)
    cfg = ReconstructorConfig(**first.meta["config"]) if args.init else model_config(args, ae)
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


def run_streamed(args: argparse.Namespace) -> int:
    """One stage, latent MSE plus the decoded-field loss from step 1, on assets made as it trains."""
    auto = args.stream == "auto"
    limit = STREAM_AUTO_LIMIT if auto else int(args.stream)
    stream = AssetStream(limit, args.variants, args.workers)  # forks its workers before CUDA starts
    device = training_device(args)
    torch.manual_seed(args.seed)
    ae = load_autoencoder(device=device).eval().requires_grad_(False)
    warm = min(args.stream_warm, limit)
    stream.wait_for(warm, ae)
    print(f"{warm} assets made in {time.time() - stream.started:.0f}s ({stream.rate():.1f}/s)", flush=True)
    mean = stream.latent[:warm].mean(dim=(0, 3, 4), keepdim=True)[0]
    std = stream.latent[:warm].std(dim=(0, 3, 4), keepdim=True)[0].clamp(min=1e-3)
    cfg = model_config(args, ae)
    net = TriplaneReconstructor(cfg).to(device)
    print(f"reconstructor: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters", flush=True)
    amp = device.type == "cuda"  # bf16 transformer on CUDA; the losses and the decoder stay float32
    plan: list[StreamSchedule] = []

    def make_step(net, opt, sched, rng, _gen):
        calls = [0]

        def step():
            calls[0] += 1
            n = plan[0].available(calls[0]) if plan else warm
            stream.wait_for(n, ae)
            idx = torch.from_numpy(rng.integers(0, n, args.batch)).to(device)
            vf, vb = (torch.from_numpy(rng.integers(0, args.variants, args.batch)).to(device) for _ in range(2))
            has_back = torch.from_numpy(rng.random(args.batch) < args.back_rate).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                pred = net(stream.images[idx, 0, vf].float(), stream.images[idx, 1, vb].float(), has_back).float()
            loss = ((pred - (stream.latent[idx] - mean) / std) ** 2).mean()
            k = args.decoded_batch
            loss = loss + 10.0 * args.decoded_weight * stream.field_loss(
                ae, pred[:k] * std + mean, idx[:k], args.decoded_points, rng)
            optimise(net, opt, sched, loss)
            return loss
        return step

    sched, train_step = planned_run(args, device, net, make_step, warmup=300)
    steps = max(args.schedule_steps, args.steps)
    if auto:  # what the workers make by the ramp's end, with a margin
        seconds = (args.deadline - time.time()) if args.deadline else args.time_budget
        limit = min(limit, warm + int(0.85 * stream.rate() * args.stream_ramp * max(seconds, 0)))
    plan.append(StreamSchedule(limit, warm, int(args.stream_ramp * steps)))
    print(f"training {steps} steps on {limit} assets ({warm} at first, all from step {plan[0].ramp_steps})",
          flush=True)

    def save(ema, step, elapsed):
        save_model(weights_bundle(ema, "net", latent_mean=mean, latent_std=std), args.out, cfg.to_dict(),
                   half=True, seed=args.seed, steps=step, schedule_steps=steps, batch=args.batch,
                   lr=args.lr, stream=limit, stream_warm=warm, stream_ramp=args.stream_ramp, variants=args.variants,
                   back_rate=args.back_rate, decoded_weight=args.decoded_weight,
                   decoded_batch=args.decoded_batch, decoded_points=args.decoded_points, frame="image",
                   made_per_second=round(stream.rate(), 1), train_seconds=round(elapsed), device=device.type,
                   version="1.4")

    try:
        train(args, net, sched, train_step, 250, save)
    finally:
        stream.close()
    return 0
