"""Instruction editing of a latent, the inference API the backend calls.

    editor = LatentEditor.load(device=device)
    edited, warnings = editor.edit_latent(latent, "make the legs longer", seed=0, strength=1.0)

The model samples the latent *delta* (target - source, normalised) with Euler steps of
rectified flow (one by default: the conditional mean), conditioned on the source latent
(added to every token) and on the instruction (adaLN from the pooled sentence embedding,
cross-attention to its tokens). Predicting the delta keeps what the instruction does not
touch close to zero change; a model with a change gate also says which latent texels the
edit changes, and the delta is kept only there. `strength` scales it: 0 returns the source
exactly. An instruction far from every training instruction gets a warning naming the nearest
supported edits, and its delta is scaled down with the similarity so an unsupported request
does no silent damage.

Colour edits take another path: an instruction the part grounding network reads as a recolour
or as adding or removing a pattern is applied where that network says it points, as an
encoded colour delta (models/edit/recolour.py), with the same strength and confidence scaling.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..checkpoint import WEIGHTS_DIR, load_network
from ..mesh import Cancelled
from ..text.conditioning import TEXT_STAT_KEYS, standardise_text
from ..text.dit import DiTConfig, LatentDiT
from ..text.encoder import Encoded, SentenceEncoder, shared_encoder
from ..text.flow import initial_noise, sample
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.loading import load_autoencoder
from .grounding import DEFAULT_WEIGHTS as GROUNDING_WEIGHTS
from .grounding import PartGrounding, load_grounding
from .recolour import GROUNDED_PATHS, RecolourConfig, grounded_kinds, grounded_recolour

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "edit.safetensors")
# One Euler step from t = 1 lands on the model's conditional mean of the delta. The procedural
# world's edits are (nearly) deterministic given the source and the instruction, so further
# steps add sampling noise, not variety: measured on the held-out evaluation, 1 step against 8
# raised edit success 0.30 -> 0.34 and untouched IoU 0.882 -> 0.896, and 5 chained edits kept
# untouched IoU 0.88 instead of 0.22. `steps` > 1 still samples the flow.
DEFAULT_STEPS = 1
DEFAULT_GUIDANCE = 1.0  # measured: 2.0 and 3.0 overshoot colours and lose more of the untouched shape
OOD_RAMP = 0.12  # similarity below threshold - OOD_RAMP: the edit is scaled to nothing
DEFAULT_LOCALITY = 0.0

# one example phrase per edit kind, named in warnings for unsupported instructions
SUPPORTED_EXAMPLES = (
    "make it blue", "make the seat red", "make it bigger", "make it taller", "make the legs longer",
    "add armrests", "remove the handle", "give it four wheels", "add stripes to the body", "remove the pattern",
)


class EmptyInstructionError(ValueError):
    code = "bad_request"


@dataclass
class EditModel:
    dit: LatentDiT
    latent_mean: torch.Tensor        # (3, C, 1, 1): normalisation of source latents
    latent_std: torch.Tensor
    delta_std: torch.Tensor          # (3, C, 1, 1): scale of target - source
    instruction_bank: torch.Tensor   # (N, 384) unit embeddings of training instructions
    unsupported_bank: torch.Tensor   # (M, 384) requests outside the procedural world (edit/unsupported.py)
    example_bank: torch.Tensor       # (K, 384) embeddings of SUPPORTED_EXAMPLES
    text_stats: dict                 # per-dimension mean/std of pooled and token features (training set)
    ood_threshold: float
    meta: dict

    @classmethod
    def load(cls, path: str = DEFAULT_WEIGHTS, device="cpu") -> "EditModel":
        dit, state, meta = load_network(path, lambda c: LatentDiT(DiTConfig(**c)), "dit", device,
                                        "python -m models.train edit")
        return cls(dit, state["latent_mean"], state["latent_std"], state["delta_std"],
                   state["instruction_bank"].float(), state["unsupported_bank"].float(), state["example_bank"].float(),
                   {k: state[k] for k in TEXT_STAT_KEYS}, float(meta["ood_threshold"]), meta)

    def normalise(self, latent: torch.Tensor) -> torch.Tensor:
        return (latent - self.latent_mean) / self.latent_std

    def condition(self, pooled: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple:
        return standardise_text(pooled, tokens, mask, self.text_stats)


def localise(delta: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep the delta where the model changes the latent most (DiffEdit-style mask from the
    model's own prediction): per texel of each plane, the delta's size (smoothed over 3x3)
    relative to its largest value in the asset; below `threshold` it is zeroed, above twice
    that it is kept, with a linear ramp between. Small changes spread over the whole triplane
    are sampling noise that drifts untouched parts, most visibly over chained edits."""
    if threshold <= 0:
        return delta
    b, planes, c, r, _ = delta.shape
    size = delta.norm(dim=2).view(b * planes, 1, r, r)
    size = F.avg_pool2d(size, 3, stride=1, padding=1, count_include_pad=False).view(b, planes, 1, r, r)
    rel = size / size.amax(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-8)
    return delta * ((rel - threshold) / threshold).clamp(0.0, 1.0)


def confidence(similarity: float, threshold: float) -> float:
    """1 at or above the calibrated threshold, falling linearly to 0 over OOD_RAMP below it."""
    return float(min(1.0, max(0.0, 1.0 - (threshold - similarity) / OOD_RAMP)))


def _velocity_keeping_first_gate(dit: LatentDiT, gate_logits: list, *args) -> torch.Tensor:
    """The DiT's velocity; the change-gate logits of its first call are appended to gate_logits."""
    velocity, logits = dit(*args, with_gate=True)
    if not gate_logits:
        gate_logits.append(logits)
    return velocity


@dataclass
class Recolourer:
    """The grounded colour-edit path: the part grounding network and the autoencoder whose decoded
    surface it reads and whose encoder lands the edit on the latent."""
    ae: TriplaneAutoencoder
    grounding: PartGrounding
    cfg: RecolourConfig = field(default_factory=RecolourConfig)


class LatentEditor:
    def __init__(self, model: EditModel, encoder: SentenceEncoder, recolourer: Recolourer | None = None):
        self.model = model
        self.encoder = encoder
        self.recolourer = recolourer
        self._last_encoded: tuple[tuple[str, ...], Encoded] | None = None

    def encode(self, instructions: list[str]) -> Encoded:
        """The sentence encoder's features, kept for the last instructions: `path` asks again for the
        instruction an edit just encoded (~9 ms of MiniLM on the CPU)."""
        key = tuple(instructions)
        if self._last_encoded is None or self._last_encoded[0] != key:
            self._last_encoded = key, self.encoder.encode(instructions)
        return self._last_encoded[1]

    @classmethod
    def load(cls, path: str = DEFAULT_WEIGHTS, device="cpu", encoder: SentenceEncoder | None = None,
             autoencoder: TriplaneAutoencoder | None = None,
             grounding_path: str | None = GROUNDING_WEIGHTS) -> "LatentEditor":
        """grounding_path=None: every edit by the flow model (no grounded recolours)."""
        recolourer = None
        if grounding_path is not None:
            recolourer = Recolourer(autoencoder or load_autoencoder(device=device), load_grounding(grounding_path, device))
        return cls(EditModel.load(path, device), encoder or shared_encoder(device), recolourer)

    def assess(self, pooled: torch.Tensor) -> tuple[float, list[str]]:
        """(confidence in [0, 1], warnings) for one instruction embedding."""
        m = self.model
        sim = float((m.instruction_bank @ pooled).max())
        outside = float((m.unsupported_bank @ pooled).max()) > sim
        conf = 0.0 if outside else confidence(sim, m.ood_threshold)
        if conf >= 1.0:
            return 1.0, []
        near = torch.topk(m.example_bank @ pooled, 3).indices.tolist()
        examples = "; ".join(f"'{SUPPORTED_EXAMPLES[i]}'" for i in near)
        effect = "the asset is left unchanged" if conf == 0 else f"the edit is applied at {conf:.0%} strength"
        why = ("it asks for something outside what the bundled model can edit (colours, sizes, parts, counts, patterns)"
               if outside else f"it is far from the edits the bundled model knows (similarity {sim:.2f} < {m.ood_threshold:.2f})")
        return conf, [f"instruction not understood: {why}, so {effect}; supported edits look like {examples}"]

    def edit_latents(self, latents: torch.Tensor, instructions: list[str], seeds: list[int],
                     strength: float = 1.0, steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
                     locality: float = DEFAULT_LOCALITY, gate: bool = True, grounded: bool = True,
                     progress: Callable | None = None,
                     cancel: Callable | None = None) -> tuple[torch.Tensor, list[list[str]]]:
        """latents (B, 3, C, R, R) -> edited latents (B, 3, C, R, R), warnings per instruction.
        gate=False ignores a model's change gate, grounded=False sends recolours through the flow
        model too (both for measuring what they add)."""
        edited, weights, enc, warnings = self._flow_edits(latents, instructions, seeds, strength, steps, guidance,
                                                          locality, gate, progress, cancel)
        if grounded and self.recolourer is not None and float(weights.max()) > 0:
            edited = self._recolour_grounded(edited, latents.to(edited.device, torch.float32), enc, weights, seeds,
                                             cancel)
        return edited, warnings

    @torch.inference_mode()
    def _flow_edits(self, latents, instructions, seeds, strength, steps, guidance, locality, gate, progress, cancel):
        """The flow model's edits -> (edited latents, per-row weight = strength x confidence,
        the encoded instructions, warnings)."""
        if any(not s or not s.strip() for s in instructions):
            raise EmptyInstructionError("the instruction is empty: say what to change, e.g. 'make it blue'")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        m = self.model
        dev = m.latent_mean.device
        latents = latents.to(dev, torch.float32)
        enc = self.encode(instructions)
        assessed = [self.assess(enc.pooled[i]) for i in range(len(instructions))]
        scale = torch.tensor([strength * c for c, _ in assessed], device=dev).view(-1, 1, 1, 1, 1)
        warnings = [w for _, w in assessed]
        if float(scale.max()) == 0.0:
            return latents.clone(), scale.view(-1), enc, warnings
        source = m.normalise(latents)
        cfg = m.dit.cfg
        shape = (1, 3, cfg.latent_channels, cfg.latent_res, cfg.latent_res)
        noise = torch.cat([initial_noise(shape, s, dev) for s in seeds])
        null = m.dit.null_condition(len(instructions), enc.tokens.shape[1])
        cond = (*m.condition(enc.pooled, enc.tokens, enc.mask), source)
        velocity, gate_logits = m.dit, []
        if gate and m.dit.cfg.change_gate:
            velocity = partial(_velocity_keeping_first_gate, m.dit, gate_logits)
        delta = sample(velocity, cond, (*null, source), noise, steps=steps, guidance=guidance, progress=progress,
                       cancel=cancel)
        if gate_logits:
            # the change gate read at t = 1, where the instruction and the source are the only
            # information: the sampler's first call, whose first B rows are the conditional ones
            delta = delta * torch.sigmoid(gate_logits[0][:len(instructions)])[:, :, None]
        return latents + scale * localise(delta, locality) * m.delta_std, scale.view(-1), enc, warnings

    @torch.inference_mode()
    def _recolour_grounded(self, edited: torch.Tensor, latents: torch.Tensor, enc, weights: torch.Tensor,
                           seeds: list[int], cancel: Callable | None) -> torch.Tensor:
        """Rows whose instruction the grounding network reads as a colour edit (a recolour, a
        pattern added or removed) are replaced (in place) by the source repainted where it points
        (models/edit/recolour.py), not the flow's delta: the flow model recolours all or nothing
        (held-out part recolours 0 of 6) and rarely touches patterns."""
        r = self.recolourer
        kinds = grounded_kinds(r.grounding, enc.tokens, enc.mask, r.cfg.kinds)
        for i, kind in enumerate(kinds):
            if kind is None or float(weights[i]) <= 0:
                continue
            if cancel is not None and cancel():
                raise Cancelled()
            edited[i:i + 1] = grounded_recolour(r.ae, r.grounding, latents[i:i + 1], enc.tokens[i:i + 1],
                                                enc.mask[i:i + 1], float(weights[i]), r.cfg, seeds[i], kind)
        return edited

    def path(self, instruction: str) -> str:
        """Which model makes this instruction's edit (for metadata): "grounded_recolour",
        "grounded_pattern" or "flow"."""
        if self.recolourer is None or not instruction.strip():
            return "flow"
        enc, r = self.encode([instruction]), self.recolourer
        kind = grounded_kinds(r.grounding, enc.tokens, enc.mask, r.cfg.kinds)[0]
        return GROUNDED_PATHS[kind] if kind else "flow"

    def edit_latent(self, latent: torch.Tensor, instruction: str, seed: int = 0, **kw) -> tuple[torch.Tensor, list[str]]:
        edited, warnings = self.edit_latents(latent[:1], [instruction], [seed], **kw)
        return edited, warnings[0]
