"""The pieces the rectified-flow trainings (text, edit) share: classifier-free-guidance
dropout of the condition, the warm-up + cosine schedule, one optimiser step with clipping,
the EMA of the weights, and the step log."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch


def drop_condition(model, rng: np.random.Generator, rate: float, pooled, tokens, mask) -> tuple:
    """Replace a random `rate` of the batch's conditions by the model's null condition."""
    drop = torch.from_numpy(rng.random(len(pooled)) < rate)
    if drop.any():
        np_, nt, nm = model.null_condition(int(drop.sum()), tokens.shape[1])
        pooled, tokens, mask = pooled.clone(), tokens.clone(), mask.clone()
        pooled[drop], tokens[drop], mask[drop] = np_, nt, nm
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
