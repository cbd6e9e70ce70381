"""The pieces the latent trainings (text, edit, images) share: where they run and for how
long, classifier-free-guidance dropout of the condition, the warm-up + cosine schedule, one
optimiser step with clipping, the EMA of the weights, and the step log."""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

import numpy as np
import torch

from ..device import pick_device
from ..text.dit import LatentDiT


def add_runtime_arguments(p, threads: int = 1) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=threads,
                   help="torch CPU threads (1 is fastest on a shared 2-core machine: OpenMP spin-waits "
                        "when oversubscribed)")
    p.add_argument("--workers", type=int, default=2, help="processes generating the training data")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds of training: sets --steps and --schedule-steps to the steps that fit, timed "
                        "on a throwaway copy before step 1; the weights record the count, so "
                        "--steps K --schedule-steps K reproduces them")
    p.add_argument("--deadline", type=float, default=0.0,
                   help="Unix time by which training must end (like --time-budget, counted from when the data "
                        "is ready; for several trainings sharing one machine)")


def add_summary_arguments(p, queries: int = 8) -> None:
    p.add_argument("--summary-queries", type=int, default=queries,
                   help="vectors in the learned prompt summary (0: condition on the raw encoder features only)")
    p.add_argument("--no-raw-tokens", action="store_true",
                   help="cross-attend the prompt summary only, not the encoder's token features")
    p.add_argument("--head-pretrain", type=int, default=1500,
                   help="steps training the prompt summary on its attribute targets before the DiT")
    p.add_argument("--aux-weight", type=float, default=0.1,
                   help="weight of the summary's attribute loss during DiT training")


def training_device(args) -> torch.device:
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)  # pick_device sets the inference default on the CPU
    if device.type == "cuda":  # TF32 matrix products: ~8x float32's speed, ample for these losses
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device


def steps_that_fit(step, budget_s: float, device: torch.device, probe: int = 30, margin: float = 0.85,
                   multiple: int = 100) -> int:
    """How many calls of `step()` (a training step on throwaway state) fit in budget_s."""
    def timed(n: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(n):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    timed(5)  # warm-up: allocator, kernels, caches
    per_step = timed(probe) / probe
    steps = max(multiple, int(budget_s * margin / per_step) // multiple * multiple)
    print(f"{per_step * 1000:.1f} ms a step: {steps} steps fit in {budget_s:.0f}s", flush=True)
    return steps


def fit_steps_to_budget(args, device: torch.device, make_step) -> None:
    """With --time-budget or --deadline, set args.steps = args.schedule_steps from a throwaway
    run of make_step(rng, generator) (a closure over copies of the model and optimiser)."""
    budgets = [b for b in (args.time_budget, args.deadline - time.time() - 15 if args.deadline else 0) if b > 0]
    if args.time_budget > 0 or args.deadline:
        step = make_step(np.random.default_rng(12345), torch.Generator().manual_seed(12345))
        args.steps = args.schedule_steps = steps_that_fit(step, min(budgets, default=1.0), device)


def planned_run(args, device: torch.device, model: torch.nn.Module, make_step, warmup: int):
    """(schedule, step function) of a run: AdamW (args.lr, wd 0.01) with warm-up + cosine over
    the run's steps. make_step(net, opt, sched, rng, generator) -> a function doing one step.
    With --time-budget or --deadline the step count is fitted first on throwaway copies."""
    def adamw(net):
        return torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)

    def throwaway_step(rng, gen):
        net = copy.deepcopy(model)
        opt = adamw(net)
        return make_step(net, opt, warmup_cosine(opt, warmup, 1000), rng, gen)

    fit_steps_to_budget(args, device, throwaway_step)
    opt = adamw(model)
    sched = warmup_cosine(opt, warmup, max(args.schedule_steps, args.steps))
    return sched, make_step(model, opt, sched, np.random.default_rng(args.seed),
                            torch.Generator().manual_seed(args.seed))


def train(args, model: torch.nn.Module, sched, train_step, save_every: int, save) -> None:
    """The loop the trainings share: args.steps calls of train_step(), the EMA of the weights,
    the step log, and save(ema, step, elapsed_seconds) every save_every steps and at the end."""
    ema = copy.deepcopy(model).eval()
    log = StepLog(args.run_dir)
    for step in range(1, args.steps + 1):
        loss = train_step()
        ema_update(ema, model, step, args.ema)
        log(step, loss, sched)
        if step % save_every == 0 or step == args.steps:
            save(ema, step, log.elapsed)
    print(f"wrote {args.out} after {log.elapsed / 60:.1f} min of training", flush=True)


def two_stage_run(args, device: torch.device, new_model, load_weights, make_step_with, saver, second_steps: int,
                  second_lr: float, warmup: tuple[int, int], save_every: tuple[int, int],
                  second_seed_offset: int = 1) -> None:
    """A first stage of args.steps from new_model() (skipped when args.init names its weights), then,
    when second_steps > 0, a second stage from the first's EMA weights as saved, with its own
    schedule (second_lr), seed + second_seed_offset and no time budget; the first stage then writes
    run_dir/stage1.safetensors. make_step_with(stage 1 or 2) -> a make_step for planned_run;
    saver(stage_args, first_steps or 0 in the first stage) -> save(ema, step, elapsed);
    load_weights(path) -> (model, metadata)."""
    first_stage = args.init
    if not first_stage:
        model = new_model()
        sched, train_step = planned_run(args, device, model, make_step_with(1), warmup=warmup[0])
        first_stage = os.path.join(args.run_dir, "stage1.safetensors") if second_steps else args.out
        stage1 = argparse.Namespace(**{**vars(args), "out": first_stage})
        train(stage1, model, sched, train_step, save_every[0], saver(stage1, 0))
    if second_steps:
        model, meta = load_weights(first_stage)
        first_steps = int(meta["steps"])
        print(f"first stage: {first_stage} ({first_steps} steps)", flush=True)
        stage = argparse.Namespace(**{**vars(args), "steps": second_steps, "schedule_steps": second_steps,
                                      "lr": second_lr, "seed": args.seed + second_seed_offset,
                                      "time_budget": 0.0, "deadline": 0.0})
        sched, train_step = planned_run(stage, device, model.train(), make_step_with(2), warmup=warmup[1])
        train(stage, model, sched, train_step, save_every[1], saver(stage, first_steps))


def new_dit(cfg, args, device: torch.device, sample_batch, held_out) -> torch.nn.Module:
    """A fresh LatentDiT for a first stage; when it has a prompt summary (--summary-queries) and
    --head-pretrain, that summary is pre-trained first (`pretrain_prompt_head`; held_out() -> its
    reported held-out batch, built only then)."""
    model = LatentDiT(cfg).to(device)
    if args.summary_queries and args.head_pretrain:
        pretrain_prompt_head(model, sample_batch, args.head_pretrain, args.seed, held_out())
    return model


def dit_weights(pipeline_model, device: torch.device):
    """load_weights for `two_stage_run` from a pipeline's weights class (`TextModel`, `EditModel`)."""
    def load(path: str):
        loaded = pipeline_model.load(path, device)
        return loaded.dit, loaded.meta
    return load


def pretrain_prompt_head(model, sample_batch, steps: int, seed: int, held_out: tuple | None = None,
                         batch: int = 256) -> None:
    """Train the DiT's prompt summary and its attribute read-out alone, so that the DiT is
    conditioned from its first step on a summary that already separates what the texts describe.
    sample_batch(rng, batch) -> (tokens, masks, targets); held_out: the same, only reported."""
    params = list(model.prompt_head.parameters()) + list(model.prompt_probe.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng([seed, 11])
    for step in range(1, steps + 1):
        tokens, masks, targets = sample_batch(rng, batch)
        loss = model.prompt_probe.loss(model.prompt_head(tokens, masks), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == steps:
            report = f"prompt head {step}/{steps}: attribute loss {loss.item():.3f}"
            if held_out is not None:
                h_tokens, h_masks, h_targets = held_out
                with torch.no_grad():
                    acc = model.prompt_probe.accuracy(model.prompt_head(h_tokens, h_masks), h_targets)
                report += "; held-out phrasings: " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items())
            print(report, flush=True)


def drop_condition(model, rng: np.random.Generator, rate: float, pooled, tokens, mask) -> tuple:
    """Replace a random `rate` of the batch's conditions by the model's null condition."""
    drop = torch.from_numpy(rng.random(len(pooled)) < rate)
    if drop.any():
        np_, nt, nm = model.null_condition(int(drop.sum()), tokens.shape[1])
        pooled, tokens, mask = pooled.clone(), tokens.clone(), mask.clone()
        pooled[drop], tokens[drop], mask[drop] = np_, nt, nm
    return pooled, tokens, mask


def drop_tokens(model, rng: np.random.Generator, rate: float, pooled, tokens, mask) -> tuple:
    """Mask the token features of a random `rate` of the batch, keeping the pooled embedding."""
    drop = torch.from_numpy(rng.random(len(pooled)) < rate)
    if drop.any():
        _, nt, nm = model.null_condition(int(drop.sum()), tokens.shape[1])
        tokens, mask = tokens.clone(), mask.clone()
        tokens[drop], mask[drop] = nt, nm
    return pooled, tokens, mask


def warmup_cosine(opt, warmup: int, horizon: int, floor: float = 0.05):
    """Linear warm-up, then cosine from 1 to `floor` over `horizon` steps."""
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, horizon) / horizon))))


def optimise(model, opt, sched, loss, clip: float = 1.0) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    sched.step()


@torch.no_grad()
def ema_update(ema, model, step: int, decay: float) -> None:
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(d).add_(pm.detach(), alpha=1 - d)


def weights_bundle(net, prefix: str = "dit", **buffers) -> torch.nn.Module:
    """The (EMA) network and the tensors its pipeline needs, as one module for `save_model`:
    keys `<prefix>.*` plus the buffer names."""
    bundle = torch.nn.Module()
    setattr(bundle, prefix, net)
    for name, value in buffers.items():
        bundle.register_buffer(name, value.clone())
    return bundle


class StepLog:
    """Every 100 steps: loss, learning rate and elapsed time to stdout and run_dir/log.jsonl."""

    def __init__(self, run_dir: str):
        os.makedirs(run_dir, exist_ok=True)
        self.file = open(os.path.join(run_dir, "log.jsonl"), "a")
        self.start = time.time()

    def __call__(self, step: int, loss, sched) -> None:
        if step % 100:
            return
        rec = {"step": step, "loss": round(loss.item(), 5), "lr": sched.get_last_lr()[0],
               "elapsed_s": round(time.time() - self.start, 1)}
        print(json.dumps(rec), flush=True)
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()

    @property
    def elapsed(self) -> float:
        return time.time() - self.start
