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
So does removing a part, which the instruction kind reader (models/edit/kinds.py) recognises:
the part the grounding network marks is cut out of the shown field (models/edit/removal.py),
and the cut travels with the edit (`Edit.cut`). And so does resizing the whole asset (all of it,
its height or its width): the kind reader reads which way, and the decoded surface is scaled
exactly and encoded as a delta (models/edit/resize.py; `Edit.rescale`), for any category; and
resizing one part (its length, width or size): the part the grounding network marks is
stretched or scaled on the decoded surface, what stands on it carried along
(models/edit/part_resize.py); and changing how many of a part there are: the pieces of the part
the grounding network marks, laid out in a ring or in rows, are laid out again for the count the
kind reader reads, the pieces dropped cut out and the new ones encoded
(models/edit/recount.py).
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
from ..text.colour_value import colour_value
from ..text.conditioning import TEXT_STAT_KEYS, standardise_text
from ..text.dit import DiTConfig, LatentDiT
from ..text.encoder import Encoded, SentenceEncoder, shared_encoder
from ..text.flow import initial_noise, sample
from ..triplane.autoencoder import TriplaneAutoencoder
from ..triplane.loading import load_autoencoder
from .grounding import DEFAULT_WEIGHTS as GROUNDING_WEIGHTS
from .grounding import GROUNDED_KINDS, PartGrounding, load_grounding
from .kinds import DEFAULT_WEIGHTS as KINDS_WEIGHTS
from .kinds import InstructionKinds, KindReading, load_kind_reader
from .part_resize import PartRescale, PartResizeConfig, grounded_part_resize
from .presence import DEFAULT_WEIGHTS as PRESENCE_WEIGHTS
from .presence import PartPresence, load_part_presence
from .recolour import GROUNDED_PATHS, RecolourConfig, grounded_kinds, grounded_recolour, kind_probabilities
from .recount import RecountConfig, grounded_recount
from .removal import PartCut, RemovalConfig, grounded_removal
from .resize import Rescale, ResizeConfig, grounded_resize

DEFAULT_WEIGHTS = os.path.join(WEIGHTS_DIR, "edit.safetensors")
# One Euler step from t = 1 lands on the model's conditional mean of the delta. The procedural
# world's edits are (nearly) deterministic given the source and the instruction, so further
# steps add sampling noise, not variety: measured on the held-out evaluation, 1 step against 8
# raised edit success 0.30 -> 0.34 and untouched IoU 0.882 -> 0.896, and 5 chained edits kept
# untouched IoU 0.88 instead of 0.22. `steps` > 1 still samples the flow.
DEFAULT_STEPS = 1
# Guidance on the flow model's edits. When colours went through it, 2.0 and 3.0 overshot them and
# lost untouched shape (models/cards/edit.md); now colours, removals, resizes and counts are
# grounded and the flow model adds parts and does what the grounded paths do not. Measured
# (2026-11-28, default evaluation, 1.0 -> 2.0): held-out phrasings 0.759 -> 0.778, combinations
# 0.789 -> 0.842, untouched IoU 0.9755 -> 0.9737 / 0.9509 both, chains and out-of-domain edits
# unchanged; held-out added parts (12 per kind) 5 -> 8 of 11 (3.0: 8, untouched IoU 0.928).
DEFAULT_GUIDANCE = 2.0
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


def pattern_ways(read: KindReading, kinds: list[str | None], taken: tuple[str, ...],
                 grounding: torch.Tensor | None = None) -> list[str | None]:
    """The grounding network's colour edit kinds (of those `taken`), with whether a pattern is
    added or removed read by the kind reader and the grounding network together: the mean of
    their two probabilities of each way (`grounding`: the network's `kind_probabilities`; the
    reader's alone without it). Each misreads held-out phrasings the other reads right: the
    reader took "no more stripes" for adding stripes (0.59 against 0.20), the network "no more
    checks" (0.50 against 0.42); averaged, both are removals. On three evaluation sets (the
    default and two of fresh assets: 36 held-out pattern additions, 36 removals, 12 added to a
    mug) three "no more stripes" read as additions became removals and nothing else turned.
    (The reader alone was chosen when the network's kind head moved from 0.85 to 0.48 of 40
    held-out removals between two trainings that differ only in the count changes' part
    labels: models/cards/grounding.md.)"""
    both = ("add_pattern", "remove_pattern")
    if not set(both) <= set(taken):
        return kinds
    add, remove = (read.probability(k) for k in both)
    if grounding is not None:
        add = (add + grounding[:, GROUNDED_KINDS.index("add_pattern")]) / 2
        remove = (remove + grounding[:, GROUNDED_KINDS.index("remove_pattern")]) / 2
    return [("add_pattern" if float(add[i]) >= float(remove[i]) else "remove_pattern")
            if k in both else k for i, k in enumerate(kinds)]


def _velocity_keeping_first_gate(dit: LatentDiT, gate_logits: list, *args) -> torch.Tensor:
    """The DiT's velocity; the change-gate logits of its first call are appended to gate_logits."""
    velocity, logits = dit(*args, with_gate=True)
    if not gate_logits:
        gate_logits.append(logits)
    return velocity


@dataclass
class GroundedEditor:
    """The grounded edit paths: the part grounding network and the autoencoder whose decoded
    surface it reads and whose encoder lands the edit on the latent; with a kind reader and a
    part presence network, part removals too."""
    ae: TriplaneAutoencoder
    grounding: PartGrounding
    cfg: RecolourConfig = field(default_factory=RecolourConfig)
    kind_reader: InstructionKinds | None = None
    presence: PartPresence | None = None
    removal: RemovalConfig = field(default_factory=RemovalConfig)
    resize: ResizeConfig | None = field(default_factory=ResizeConfig)  # None: resizes by the flow model
    part_resize: PartResizeConfig | None = field(default_factory=PartResizeConfig)  # None: by the flow model
    recount: RecountConfig | None = field(default_factory=RecountConfig)  # None: count changes by the flow model


@dataclass
class Edit:
    """One edited asset: its latent (1, 3, C, R, R), warnings, which path made it ("flow",
    "grounded_recolour", "grounded_pattern", "grounded_removal", "grounded_resize" or
    "grounded_part_resize", "grounded_recount"), for a removed part (or the pieces a count
    change drops) the cut that shows the removal (the latent alone cannot:
    models/edit/removal.py), and for a grounded resize the move made (earlier cuts move with it)."""
    latent: torch.Tensor
    warnings: list[str]
    path: str = "flow"
    cut: PartCut | None = None
    rescale: Rescale | PartRescale | None = None


class LatentEditor:
    def __init__(self, model: EditModel, encoder: SentenceEncoder, grounded: GroundedEditor | None = None):
        self.model = model
        self.encoder = encoder
        self.grounded = grounded
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
             grounding_path: str | None = GROUNDING_WEIGHTS,
             kinds_path: str | None = KINDS_WEIGHTS,
             presence_path: str | None = PRESENCE_WEIGHTS) -> "LatentEditor":
        """grounding_path=None: every edit by the flow model (no grounded edits); kinds_path=None:
        part removals by the flow model too; presence_path=None: a removal cuts whatever the
        grounding network marks, whether or not the asset has the part."""
        grounded = None
        if grounding_path is not None:
            grounded = GroundedEditor(
                autoencoder or load_autoencoder(device=device), load_grounding(grounding_path, device),
                kind_reader=None if kinds_path is None else load_kind_reader(kinds_path, device),
                presence=None if kinds_path is None or presence_path is None else load_part_presence(presence_path, device))
        return cls(EditModel.load(path, device), encoder or shared_encoder(device), grounded)

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
                     progress: Callable | None = None, cancel: Callable | None = None) -> list[Edit]:
        """latents (B, 3, C, R, R) -> one Edit per instruction. gate=False ignores a model's change
        gate, grounded=False sends colour edits and removals through the flow model too (both for
        measuring what they add)."""
        values = [colour_value(text) for text in instructions]
        instructions = [v.reading for v in values]   # colour values named by words for the models
        edited, weights, enc, warnings = self._flow_edits(latents, instructions, seeds, strength, steps, guidance,
                                                          locality, gate, progress, cancel)
        edits = [Edit(edited[i:i + 1], warnings[i]) for i in range(len(instructions))]
        if grounded and self.grounded is not None and float(weights.max()) > 0:
            source = latents.to(edited.device, torch.float32)
            reader = self.grounded.kind_reader
            read = reader.read(enc.pooled) if reader is not None else None
            self._recolour_grounded(edits, source, enc, read, weights, seeds, cancel, [v.rgb for v in values])
            if read is not None:
                self._remove_grounded(edits, source, enc, read, weights, seeds, cancel)
                self._resize_grounded(edits, source, enc, read, weights, seeds, cancel)
                self._recount_grounded(edits, source, enc, read, weights, seeds, cancel)
        return edits

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
    def _recolour_grounded(self, edits: list[Edit], latents: torch.Tensor, enc, read: KindReading | None,
                           weights: torch.Tensor, seeds: list[int], cancel: Callable | None,
                           colours: list | None = None) -> None:
        """Edits whose instruction the grounding network reads as a colour edit (a recolour, a
        pattern added or removed) are replaced (in place) by the source repainted where it points
        (models/edit/recolour.py), not the flow's delta: the flow model recolours all or nothing
        (held-out part recolours 0 of 6) and rarely touches patterns. Whether a pattern is added
        or removed, and which pattern is added (stripes, checks, dots), the kind reader says,
        where there is one. `colours`: per instruction, the colour value it wrote
        (`colour_value`), painted instead of the network's reading; None where it wrote none."""
        g = self.grounded
        probabilities = kind_probabilities(g.grounding, enc.tokens, enc.mask)
        kinds = grounded_kinds(probabilities, g.cfg.kinds)
        patterns = [None] * len(kinds)
        if read is not None:
            patterns = read.patterns
            kinds = pattern_ways(read, kinds, g.cfg.kinds, probabilities)
        for i, kind in enumerate(kinds):
            if kind is None or float(weights[i]) <= 0:
                continue
            if cancel is not None and cancel():
                raise Cancelled()
            edits[i].latent = grounded_recolour(g.ae, g.grounding, latents[i:i + 1], enc.tokens[i:i + 1],
                                                enc.mask[i:i + 1], float(weights[i]), g.cfg, seeds[i], kind,
                                                patterns[i] if kind == "add_pattern" else None,
                                                colours[i] if colours else None)
            edits[i].path = GROUNDED_PATHS[kind]

    @torch.inference_mode()
    def _remove_grounded(self, edits: list[Edit], latents: torch.Tensor, enc, read: KindReading,
                         weights: torch.Tensor, seeds: list[int], cancel: Callable | None) -> None:
        """Edits still the flow model's whose instruction the kind reader reads as removing a part
        are replaced (in place) by the part cut out where the grounding network finds it
        (models/edit/removal.py): the flow model left thin parts (held-out removals 7 of 11). An
        asset the presence network says lacks the named part is left as it was, with a warning
        (the grounding network would mark something anyway); where the grounding network finds
        no such part the flow model's edit stays."""
        g = self.grounded
        asked = read.probability("remove_part") > g.removal.kind_threshold
        for i, edit in enumerate(edits):
            if edit.path != "flow" or not bool(asked[i]) or float(weights[i]) <= 0:
                continue
            if cancel is not None and cancel():
                raise Cancelled()
            if g.presence is not None and float(g.presence.probability(latents[i:i + 1], enc.pooled[i:i + 1])) < \
                    g.removal.present:
                edit.latent, edit.path = latents[i:i + 1].clone(), "grounded_removal"
                edit.warnings = [*edit.warnings, "the asset does not seem to have the part this instruction names, "
                                                 "so nothing was removed"]
                continue
            removed = grounded_removal(g.ae, g.grounding, latents[i:i + 1], enc.tokens[i:i + 1], enc.mask[i:i + 1],
                                       float(weights[i]), g.removal, seeds[i])
            if removed is not None:
                edit.latent, edit.cut = removed
                edit.path = "grounded_removal"

    @torch.inference_mode()
    def _resize_grounded(self, edits: list[Edit], latents: torch.Tensor, enc, read: KindReading,
                         weights: torch.Tensor, seeds: list[int], cancel: Callable | None) -> None:
        """Edits still the flow model's whose instruction the kind reader reads as a resize are
        replaced (in place) by the move made on the decoded surface: of the whole asset (all of
        it or along an axis, models/edit/resize.py) or of the part the grounding network marks
        (models/edit/part_resize.py). The flow model learned them per category: a bottle made
        narrower, a combination it never saw, went 48% of the way, a lamp's longer pole 29%."""
        g = self.grounded
        if g.resize is None and g.part_resize is None:
            return
        whole = read.probability("resize_whole") + read.probability("resize_axis")
        # a part resize where it is the kind read likeliest: "give it bigger fins" shares its frame
        # with adding a part, and is read as a part resize at 0.45 against 0.1
        part = read.likeliest("resize_part")
        ways = read.resizes
        for i, edit in enumerate(edits):
            of_whole = g.resize is not None and float(whole[i]) > g.resize.kind_threshold
            of_part = g.part_resize is not None and bool(part[i])
            if edit.path != "flow" or float(weights[i]) <= 0 or not (of_whole or of_part):
                continue
            if cancel is not None and cancel():
                raise Cancelled()
            if of_whole:
                resized, path = grounded_resize(g.ae, latents[i:i + 1], ways[i], float(weights[i]), g.resize,
                                                seeds[i]), "grounded_resize"
            else:
                resized, path = grounded_part_resize(g.ae, g.grounding, latents[i:i + 1], enc.tokens[i:i + 1],
                                                     enc.mask[i:i + 1], ways[i], float(weights[i]), g.part_resize,
                                                     seeds[i]), "grounded_part_resize"
            if resized is None:
                continue
            edit.latent, edit.rescale, shrunk = resized
            edit.path = path
            if shrunk:
                edit.warnings = [*edit.warnings, "the resized asset would not fit in Kiln's working volume, "
                                                 "so it was resized only as far as it fits"]

    @torch.inference_mode()
    def _recount_grounded(self, edits: list[Edit], latents: torch.Tensor, enc, read: KindReading,
                          weights: torch.Tensor, seeds: list[int], cancel: Callable | None) -> None:
        """Edits still the flow model's whose instruction the kind reader reads likeliest as a count
        change are replaced (in place) by the part's pieces laid out again for the count its count
        head reads (models/edit/recount.py): the flow model learned counts per category (a
        rocket's fins, a combination it never saw, moved 0 of 8 times). Where the grounding
        network marks no ring or rows of pieces (a tree's tiers), the flow model's edit stays."""
        g = self.grounded
        if g.recount is None:
            return
        asked, counts = read.likeliest("change_count"), read.counts
        for i, edit in enumerate(edits):
            if edit.path != "flow" or not bool(asked[i]) or float(weights[i]) <= 0:
                continue
            if cancel is not None and cancel():
                raise Cancelled()
            recounted = grounded_recount(g.ae, g.grounding, latents[i:i + 1], enc.tokens[i:i + 1], enc.mask[i:i + 1],
                                         counts[i], float(weights[i]), g.recount, seeds[i])
            if recounted is None:
                continue
            edit.latent, edit.cut, already = recounted
            edit.path = "grounded_recount"
            if already:
                edit.warnings = [*edit.warnings, f"the asset already has {counts[i]} of the part this instruction "
                                                 "names, so nothing was changed"]

    def path(self, instruction: str) -> str:
        """Which path a colour edit of this instruction takes ("grounded_recolour",
        "grounded_pattern"), else "flow" (a removal's or a resize's path depends on the asset and
        its surface: `Edit.path`)."""
        if self.grounded is None or not instruction.strip():
            return "flow"
        enc, g = self.encode([colour_value(instruction).reading]), self.grounded
        kind = grounded_kinds(kind_probabilities(g.grounding, enc.tokens, enc.mask), g.cfg.kinds)[0]
        return GROUNDED_PATHS[kind] if kind else "flow"

    def edit(self, latent: torch.Tensor, instruction: str, seed: int = 0, **kw) -> Edit:
        return self.edit_latents(latent[:1], [instruction], [seed], **kw)[0]

    def edit_latent(self, latent: torch.Tensor, instruction: str, seed: int = 0, **kw) -> tuple[torch.Tensor, list[str]]:
        """The edited latent and warnings alone (a removal's cut, which shows it, is in `edit`)."""
        e = self.edit(latent, instruction, seed, **kw)
        return e.latent, e.warnings
