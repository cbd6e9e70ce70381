"""Training assets made while the network trains: for a machine with many cores and a GPU.

The images training otherwise renders and samples its assets first (4000 take ~35 min on two
cores) and then trains. On a GPU machine the network would wait on the data, so here worker
processes keep making assets (renders of each view and the autoencoder's training samples, in
the image frame) while the main process trains on those made so far.

The run stays reproducible from its seed: assets come in index order, and the batch of step s
is drawn from the first `available(s)` assets, a schedule fixed before step 1 (`warm` assets,
growing linearly to all of them over the first `ramp` of the steps). A step whose assets are
not made yet waits for them, so a slower machine is slower, not different.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..data import SampleConfig, asset_record
from ..images.data import render_asset
from ..images.frame import records_in_image_frame
from ..parallel import one_thread
from ..triplane.autoencoder import decoded_field_loss
from ..world.asset import sample_asset_spec

# The autoencoder's sampling (64^3 marching cubes keeps thin legs) with fewer query points: the
# decoded-field loss draws 2048 of them a sample.
STREAM_SAMPLES = SampleConfig(n_surface=2048, n_near=4096, n_uniform=2048)


def streamed_asset(job: tuple[int, int]) -> dict[str, np.ndarray]:
    """Training asset `index` of the train split: its renders (2 views, variants, 4, 64, 64) and
    its autoencoder samples in the image frame. The same renders as `images.data.load_or_render`,
    the same sample seed as `models.data` (fewer points)."""
    index, variants = job
    record = asset_record(sample_asset_spec("train", index), seed=index * 2, cfg=STREAM_SAMPLES)
    record = {k: v[0] for k, v in records_in_image_frame({k: v[None] for k, v in record.items()}).items()}
    return {"images": render_asset("train", index, variants), **record}


@dataclass(frozen=True)
class StreamSchedule:
    assets: int      # made in all
    warm: int        # made before step 1; the latent normalisation is measured on them
    ramp_steps: int  # steps over which the sampled range grows from warm to all

    def available(self, step: int) -> int:
        grown = (self.assets - self.warm) * min(1.0, step / max(1, self.ramp_steps))
        return min(self.assets, self.warm + int(grown))


class AssetStream:
    """Worker processes making assets 0, 1, 2, ... in order; `ingest` moves those made onto the
    training device (latents encoded there). Create it before CUDA is used: workers are forked."""

    def __init__(self, limit: int, variants: int, workers: int):
        self.limit, self.variants = limit, variants
        self._made: list[dict] = []
        self._lock = threading.Lock()
        self._pool = ProcessPoolExecutor(workers, initializer=one_thread)
        results = self._pool.map(streamed_asset, [(i, variants) for i in range(limit)], chunksize=2)
        self.started = time.time()
        self._reader = threading.Thread(target=self._read, args=(results,), daemon=True)
        self._reader.start()
        self.count = 0   # assets on the device
        self.images = self.query = self.sdf = self.rgb = self.latent = None

    def _read(self, results) -> None:
        try:
            for record in results:
                with self._lock:
                    self._made.append(record)
        except CancelledError:  # `close` cancelled the assets not made yet
            pass

    def made(self) -> int:
        with self._lock:
            return self.count + len(self._made)

    def rate(self) -> float:
        """Assets made a second so far (worker start-up included)."""
        return self.made() / max(1e-3, time.time() - self.started)

    def wait_for(self, n: int, ae, poll: float = 0.05) -> None:
        """Block until the first n assets are on the device."""
        while self.count < n:
            if self.made() < n and not self._reader.is_alive():
                raise RuntimeError("asset workers stopped early")
            self.ingest(ae)
            if self.count < n:
                time.sleep(poll)

    @torch.no_grad()
    def ingest(self, ae, batch: int = 256) -> None:
        """Move every made asset onto the autoencoder's device and encode its latent."""
        with self._lock:
            new, self._made = self._made, []
        if not new:
            return
        device = next(ae.parameters()).device
        if self.images is None:
            self._allocate(new[0], ae, device)
        n = self.count
        for s in range(0, len(new), batch):
            chunk = new[s:s + batch]
            sl = slice(n + s, n + s + len(chunk))
            for name in ("images", "query", "sdf", "rgb"):
                getattr(self, name)[sl] = torch.from_numpy(np.stack([r[name] for r in chunk])).to(device)
            cloud = torch.from_numpy(np.stack([r["surface"][:2048] for r in chunk]).astype(np.float32))
            self.latent[sl] = ae.encode(cloud.to(device))
        self.count = n + len(new)

    def _allocate(self, first: dict, ae, device) -> None:
        def buffer(a: np.ndarray, dtype=torch.float16):
            return torch.empty((self.limit, *a.shape), dtype=dtype, device=device)

        self.images, self.query = buffer(first["images"]), buffer(first["query"])
        self.sdf, self.rgb = buffer(first["sdf"]), buffer(first["rgb"])
        c, r = ae.cfg.latent_channels, ae.cfg.latent_res
        self.latent = torch.empty((self.limit, 3, c, r, r), device=device)

    def field_loss(self, ae, latent: torch.Tensor, idx: torch.Tensor, points: int,
                   rng: np.random.Generator) -> torch.Tensor:
        """The autoencoder's reconstruction loss of decoded latents (autoencoder units) at
        `points` random samples of each asset idx."""
        pick = torch.from_numpy(rng.integers(0, self.query.shape[1], (len(idx), points))).to(latent.device)
        rows = idx.to(latent.device)[:, None]
        return decoded_field_loss(ae, latent, self.query[rows, pick].float(), self.sdf[rows, pick].float(),
                                  self.rgb[rows, pick].float())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
