"""Which models exist, what they can do, and a warm cache of the loaded ones.

Each entry names its modes and where its weights live; `status()` says whether it is
available and, if not, why. Loading is lazy (first use) and models stay loaded.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from models.checkpoint import WEIGHTS_DIR

from .errors import JobError


@dataclass
class ModelEntry:
    id: str
    modes: tuple[str, ...]          # "encode", "text", "images", "edit"
    description: str
    weights: tuple[str, ...]        # files that must exist
    loader: Callable[[Any], Any] | None = None   # device -> loaded model
    missing_reason: str = ""
    # published-checkpoint adapters: () -> (weights folder or None, why not found); see backend/adapters.py
    locate: Callable[[], tuple[str | None, str]] | None = None
    device_needs: str = "CPU or CUDA"
    uses_autoencoder: bool = False  # the loader is called as loader(device, the registry's autoencoder)

    def status(self) -> dict:
        if self.locate is not None:
            path, why = self.locate()
            ok = self.loader is not None and path is not None
            return {"id": self.id, "modes": list(self.modes), "available": ok, "reason": "" if ok else why,
                    "description": self.description, "weights": path, "device_needs": self.device_needs}
        missing = [w for w in self.weights if not os.path.exists(w)]
        ok = self.loader is not None and not missing
        reason = "" if ok else (self.missing_reason or f"weights not found: {', '.join(missing)}")
        return {"id": self.id, "modes": list(self.modes), "available": ok, "reason": reason,
                "description": self.description, "device_needs": self.device_needs}


def _load_autoencoder(device):
    from models.triplane.loading import load_autoencoder

    return load_autoencoder(device=device)


def _load_text(device):
    from models.text.pipeline import TextToAsset

    return TextToAsset.load(device=device)


def _load_images(device, autoencoder):
    from models.images.pipeline import DEFAULT_WEIGHTS, ImagesToAsset

    return ImagesToAsset.load(autoencoder, path=DEFAULT_WEIGHTS, device=device)


def _load_edit(device, autoencoder):
    from models.edit.pipeline import LatentEditor

    return LatentEditor.load(device=device, autoencoder=autoencoder)


def default_entries() -> list[ModelEntry]:
    return [
        ModelEntry("kiln-triplane-ae", ("encode",), "Kiln triplane autoencoder: any mesh <-> latent triplane",
                   (os.path.join(WEIGHTS_DIR, "autoencoder.safetensors"),), _load_autoencoder),
        ModelEntry("kiln-text", ("text",), "Kiln text -> triplane latent generator (rectified-flow DiT)",
                   (os.path.join(WEIGHTS_DIR, "text.safetensors"),), _load_text),
        ModelEntry("kiln-images", ("images",), "Kiln front/back images -> triplane latent reconstructor",
                   (os.path.join(WEIGHTS_DIR, "images.safetensors"),
                    os.path.join(WEIGHTS_DIR, "autoencoder.safetensors")), _load_images, uses_autoencoder=True),
        ModelEntry("kiln-edit", ("edit",), "Kiln instruction editing in the triplane latent",
                   (os.path.join(WEIGHTS_DIR, "edit.safetensors"), os.path.join(WEIGHTS_DIR, "grounding.safetensors"),
                    os.path.join(WEIGHTS_DIR, "autoencoder.safetensors")), _load_edit, uses_autoencoder=True),
    ]


def _adapter_entries() -> list[ModelEntry]:
    """Published checkpoints (Shap-E, TripoSR-format), available when their weights are on disk."""
    from .adapters import adapter_entries

    return adapter_entries()


@dataclass
class Registry:
    device_preference: str = "auto"
    entries: list[ModelEntry] = field(default_factory=lambda: default_entries() + _adapter_entries())
    _cache: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _device: Any = None

    @property
    def device(self):
        if self._device is None:
            from models.device import pick_device

            self._device = pick_device(self.device_preference)
        return self._device

    def status(self) -> list[dict]:
        return [e.status() for e in self.entries]

    def entry_for(self, mode: str, model_id: str | None = None) -> ModelEntry:
        for e in self.entries:
            if (model_id is None or e.id == model_id) and mode in e.modes:
                return e
        known = [e.id for e in self.entries if mode in e.modes]
        raise JobError("model_unavailable", f"no model {model_id!r} for {mode}; known: {known}")

    def get(self, mode: str, model_id: str | None = None):
        """The loaded model for a mode (loading it on first use)."""
        entry = self.entry_for(mode, model_id)
        st = entry.status()
        if not st["available"]:
            raise JobError("model_unavailable", f"{entry.id}: {st['reason']}")
        # the shared decoder first, outside the lock (loading it takes the lock too); the same
        # cached instance then serves every model that renders through it
        ae = self.autoencoder() if entry.uses_autoencoder else None
        with self._lock:
            if entry.id not in self._cache:
                self._cache[entry.id] = entry.loader(self.device, ae) if ae is not None else entry.loader(self.device)
            return self._cache[entry.id]

    def autoencoder(self):
        """The shared latent space's decoder, used by every generator."""
        return self.get("encode")

    def loaded(self) -> list[str]:
        return list(self._cache)
